"""VerSemi: one task-prompted model for semi-supervised segmentation over partially labeled datasets."""

__version__ = "0.1.0"
