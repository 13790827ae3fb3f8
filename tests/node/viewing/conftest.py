"""Fixtures of the viewer's tests."""
