"""The explanation job: its config and settings, the plain worker that explains a shard, its host processes, and the driver."""
