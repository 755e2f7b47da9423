"""versemi.data"""
