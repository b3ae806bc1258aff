"""Federated engine on Flower's Message API (ClientApp, ServerApp, FedAvg)."""
