"""Training: one network (train), a stack of networks at once (ensemble, its batched
parts in stacked), batch augmentation, and checkpoints for resuming bit for bit. Every
module here but checkpoints is part of the training code's hash (jobs/train_shard.py)."""
