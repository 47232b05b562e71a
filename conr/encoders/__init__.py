"""Pretrained frozen image encoders (placeholder, filled below)."""
