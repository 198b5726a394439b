"""plmkit.core: the shared core of plmkit (models, data, metrics, training, sparsity, CLI)."""

__version__ = "0.1.0"
