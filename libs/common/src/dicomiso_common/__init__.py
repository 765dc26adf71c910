"""Shared plumbing of the dicom-iso services: settings, bucket store, jobs, DICOM helpers."""
