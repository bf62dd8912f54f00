"""cadx.studies.mtmr."""
