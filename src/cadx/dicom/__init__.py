"""DICOM out (SEG, SR) and the PACS round trip (DICOMweb client, a throw-away Orthanc)."""
