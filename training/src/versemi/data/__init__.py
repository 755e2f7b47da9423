"""Datasets, training configs and plans, preprocessing, the preprocessed cache and patch sampling."""
