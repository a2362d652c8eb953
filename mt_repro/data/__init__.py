"""Datasets, label files, augmentations and the minibatch sampler of the original code."""
