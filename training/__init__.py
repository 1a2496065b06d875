"""Training subsystem: self-supervised pretraining, fine-tuning, evaluation and export."""
