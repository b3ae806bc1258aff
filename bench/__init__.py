"""bench: self-supervised pretraining for federated volumetric segmentation, benchmarked."""

__version__ = "0.1.0"
