"""cadx.studies.segmentation."""
