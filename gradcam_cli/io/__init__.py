"""Inputs and outputs: discover inputs, decode and preprocess images, labels CSV, writers (the only file writes)."""
