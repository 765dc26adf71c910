"""The dicom-iso command line and its tools: dev stack, demo data, media verifier."""
