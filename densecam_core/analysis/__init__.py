"""Torch-free analyses over a run's stored maps and index: the audit of where maps point across a dataset."""
