"""cadx.studies.imbalance."""
