"""Training data: the validation split, augmentation (albumentations pipelines and their batched
tensor form), and the loaders that feed the training loop (on the device, or CPU workers)."""
