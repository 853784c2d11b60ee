"""Training data: annotation index, crop sampling, normalisation, augmentation, DataModule."""
