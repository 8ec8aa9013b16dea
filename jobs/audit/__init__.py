"""The audit: where a run's maps point across its dataset (torch-free), and the paste test that confirms it."""
