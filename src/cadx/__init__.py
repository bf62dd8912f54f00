"""cadx: computer-aided diagnosis on medical images."""

__version__ = "0.1.0"
