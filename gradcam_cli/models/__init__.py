"""Keras models: build registry backbones, load saved models, flatten and cut graphs, find target layers."""
