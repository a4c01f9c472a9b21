"""Look inside a model: activation grids (every channel of chosen layers) and filter patterns
(gradient ascent in input space), after Deep Learning with Python, 5.4.

``activations``: :class:`~gradcam_cli.inspect.activations.ActivationProbe`, ``channel_grid``.
``filters``: :class:`~gradcam_cli.inspect.filters.FilterAscent`, ``pattern_grid``.
Light on import: TensorFlow is imported inside functions only.
"""
