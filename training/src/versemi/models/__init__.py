"""versemi.models"""
