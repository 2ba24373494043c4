"""Training of delay SNNs: datasets, augmentation, the training loop and its command line."""
