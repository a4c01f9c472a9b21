"""Configuration: backbone profiles (TOML), class names, cache directories. No TensorFlow."""
