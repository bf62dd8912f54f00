"""cadx.studies.anatomy."""
