"""Data: image discovery and reading, labeled layouts, multi-crop views, demo data."""
