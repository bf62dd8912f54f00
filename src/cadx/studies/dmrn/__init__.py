"""cadx.studies.dmrn."""
