"""Fixtures of the command-line tests (``versemi <command>``): the review folder of the review tests."""

from review.conftest import review_dir  # noqa: F401 - a fixture, shared with tests/review
