"""Training engine: the train/validate loop, checkpoints, meters."""
