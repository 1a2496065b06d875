"""Baselines the product's models are measured against (trained from scratch, no pretraining)."""
