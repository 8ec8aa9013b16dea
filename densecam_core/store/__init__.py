"""The heatmap store, torch-free: layout (every name and schema), the driver's writer, a shard's writes and commit, the index and its compaction, the lock, verify, scores, the input cache."""
