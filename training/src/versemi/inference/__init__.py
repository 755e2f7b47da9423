"""versemi.inference"""
