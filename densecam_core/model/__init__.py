"""The classifier: checkpoints (layouts, fingerprint), the inference rewrite, precision, training, classification metrics."""
