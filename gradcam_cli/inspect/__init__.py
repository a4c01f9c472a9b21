"""Look inside a model: activation grids (every channel of chosen layers) and filter patterns
(gradient ascent in input space), after Deep Learning with Python, 5.4.

``activations``: :class:`~gradcam_cli.inspect.activations.ActivationProbe` and its writer.
``filters``: :class:`~gradcam_cli.inspect.filters.FilterAscent` and its writer.
The graph work is :mod:`gradcam_cli.models.probe`'s, the pictures :mod:`gradcam_cli.render.channels`'.
Light on import: TensorFlow is imported inside functions only.
"""
