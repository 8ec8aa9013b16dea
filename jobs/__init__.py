"""The Ray jobs and the command line: the only code that imports Ray."""
