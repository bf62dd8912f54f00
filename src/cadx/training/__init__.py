"""cadx.training."""
