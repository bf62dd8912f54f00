"""Dataset adapter (being written)."""
