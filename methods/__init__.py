"""Pretraining methods, one module each; every module registers its method."""
