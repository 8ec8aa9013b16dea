"""The densecam command: argparse only, each job's parser generated from its config's fields."""
