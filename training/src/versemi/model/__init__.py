"""versemi.model"""
