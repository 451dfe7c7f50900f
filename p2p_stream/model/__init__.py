"""The model as a product: networks, checkpoints, the age/sex prior, the generalisation head and `Estimator`."""
