"""Helpers shared by the test suite (model and data factories)."""
