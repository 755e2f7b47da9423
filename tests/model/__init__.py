"""Tests of versemi.model."""
