"""The evaluation job: its config, the plain worker that scores a shard, and the driver."""
