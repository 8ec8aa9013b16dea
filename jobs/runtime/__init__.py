"""What both jobs run on: the Ray session, actor sizing and pool, the driver loop, the shard contract, the run skeleton, shared options."""
