"""cadx.pipeline."""
