"""Tests of versemi.network."""
