"""Radiogenomics of LGG (thesis A.3, A.4)."""
