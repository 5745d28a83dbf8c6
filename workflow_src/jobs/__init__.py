"""What a rule's job runs, one module per kind of job: training a shard (train_shard),
measuring it (measure_shard), measuring along training (snapshots), gathering the stores
into metrics.zarr (aggregate) and the learning curves (collect); adapter holds what every
rule script shares (its log, provenance)."""
