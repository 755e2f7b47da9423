"""versemi.training"""
