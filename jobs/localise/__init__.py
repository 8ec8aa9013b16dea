"""``densecam localise``: weak labels from a run's stored maps, thresholds calibrated on held-out images."""
