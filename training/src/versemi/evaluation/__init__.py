"""versemi.evaluation"""
