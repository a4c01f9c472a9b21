"""Faithfulness and localisation metrics for saliency maps, batched.

Contracts shared by every module here:

- images: RGB uint8 (B, H, W, 3) at the model's input size; a full-depth input's (16-bit,
  DICOM: :mod:`gradcam_cli.io.depth`) float32, on the model's scale, three equal channels
  (the baselines are then on that scale too: ``black`` is 0 of it);
- maps: float32 (B, H, W) in [0, 1] at the same size (already upsampled);
- classes: int (B,), the explained class of each image;
- a score function ``score_fn(pixels, classes) -> scores``: pixels float32
  (M, H, W, 3) in pixel space (0..255, before preprocessing), classes int (M,),
  scores (M,). :func:`gradcam_cli.metrics.scoring.make_score_fn` builds one on a
  compiled forward pass; any callable with that signature works (tests use linear ones).

Every perturbed input of a batch goes through the score function in chunks
(:func:`gradcam_cli.metrics.scoring.score_inputs`), never one step at a time.

Modules: ``scoring`` (the compiled scorer), ``perturbation`` (deletion, insertion),
``confidence`` (average drop / increase), ``road`` (ROAD and its imputer), ``occlusion``
(agreement with occlusion), ``pointing`` (pointing game, localisation error, boxes CSV),
``boxacc`` (MaxBoxAcc), ``sanity`` (cascading
randomisation, Spearman, SSIM), ``stats`` (bootstrap intervals), ``baselines``
(random and centre maps), ``registry`` (each metric registered where it is defined, with
one signature: see :mod:`.registry`). Importing this package fills the registry and
imports neither TensorFlow nor SciPy.
The throughput benchmark is ``benchmarks/_evaluate.py`` (run by ``benchmarks/bench_features.py``).
"""

# registration order is the order of --metrics all, of the table's columns and of each record's fields
from gradcam_cli.metrics import perturbation  # noqa: F401, I001  (deletion, insertion)
from gradcam_cli.metrics import confidence  # noqa: F401, I001
from gradcam_cli.metrics import road  # noqa: F401, I001
from gradcam_cli.metrics import occlusion  # noqa: F401, I001  (occlusion agreement)
from gradcam_cli.metrics import pointing  # noqa: F401, I001  (pointing, localisation)
from gradcam_cli.metrics import boxacc  # noqa: F401, I001  (maxboxacc)
from gradcam_cli.metrics.registry import METRICS, Metric, MetricBatch, get_metric, metric_names, register_metric

__all__ = ["METRICS", "Metric", "MetricBatch", "get_metric", "metric_names", "register_metric"]
