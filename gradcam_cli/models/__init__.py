"""Models: building, loading, cutting and measuring Keras models.

Kept light: importing this package does not import TensorFlow.
"""
