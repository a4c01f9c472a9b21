"""Faithfulness and localisation metrics for saliency maps, batched.

Contracts shared by every module here:

- images: RGB uint8 (B, H, W, 3) at the model's input size;
- maps: float32 (B, H, W) in [0, 1] at the same size (already upsampled);
- classes: int (B,), the explained class of each image;
- a score function ``score_fn(pixels, classes) -> scores``: pixels float32
  (M, H, W, 3) in pixel space (0..255, before preprocessing), classes int (M,),
  scores (M,). :func:`gradcam_cli.metrics.scoring.make_score_fn` builds one on a
  compiled forward pass; any callable with that signature works (tests use linear ones).

Every perturbed input of a batch goes through the score function in chunks
(:func:`gradcam_cli.metrics.scoring.score_inputs`), never one step at a time.

Modules: ``scoring`` (the compiled scorer), ``perturbation`` (deletion, insertion),
``confidence`` (average drop / increase), ``road`` (ROAD and its imputer),
``pointing`` (pointing game, localisation error, boxes CSV), ``sanity`` (cascading
randomisation, Spearman, SSIM), ``stats`` (bootstrap intervals), ``baselines``
(random and centre maps), ``bench`` (throughput figures). Importing this package
imports neither TensorFlow nor SciPy.
"""
