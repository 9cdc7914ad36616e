"""udaseg: unsupervised domain adaptation for semantic segmentation in one PyTorch toolkit."""

__version__ = "0.1.0.dev0"
