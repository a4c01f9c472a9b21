"""Maps while a model trains: :class:`GradCAMCallback`, a Keras callback.

    from gradcam_cli.keras import GradCAMCallback
    model.fit(x, y, epochs=20, callbacks=[GradCAMCallback(x_val[:8], log_dir="logs/run1", every=2)])

At the end of every ``every`` epochs it explains a fixed set of images (already preprocessed, as
``fit`` takes them) for the model being trained, in one compiled batched pass (an
:class:`~gradcam_cli.engine.explainer.Explainer` built when training begins and reused every
epoch: traced once), and logs their overlays to TensorBoard (``tf.summary.image`` under
``log_dir/gradcam``, one tag per image, the top-N in the caption) and, when asked, to the active
MLflow run and the current W&B run. The model runs in inference mode and no variable is written:
training goes on exactly as it would without the callback.

``import keras`` below is the Keras package: imports are absolute, this module is ``gradcam_cli.keras``.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import keras
import numpy as np

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.models.split import split_model
from gradcam_cli.render.overlay import colormap_id, overlays
from gradcam_cli.settings import MethodOptions
from gradcam_cli.trackers import require
from gradcam_cli.trackers.sinks import mlflow_images, wandb_images

SUBFOLDER = "gradcam"  # beside Keras's own TensorBoard callback's train/ and validation/


def display_images(images: np.ndarray) -> np.ndarray:
    """The model inputs as pictures to draw on: each image stretched to 0..255 (its own min and max),
    grey images as RGB; (N, H, W, 3) uint8."""
    x = np.asarray(images, dtype=np.float32)
    low = x.min(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(x.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
    out = np.round((x - low) / span * 255.0).astype(np.uint8)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out[..., :3]


class GradCAMCallback(keras.callbacks.Callback):
    """Overlays of ``images`` (N, H, W, C), model inputs as ``fit`` takes them, every ``every`` epochs.

    ``top``: each image's top classes, or ``classes``: these class indices for every image;
    ``method``: any registered method, or several; ``layer``: the target layer (``auto``: the last
    4-D one). ``display``: (N, h, w, 3) uint8 pictures to draw on (default: the inputs stretched to
    0..255); ``names``: one tag per image (default ``image_00``...); ``class_names``: labels for
    the captions. ``log_dir``: TensorBoard (its ``gradcam/`` subfolder); ``mlflow`` / ``wandb``:
    also log to the active MLflow run / the current W&B run. At least one of the three.
    ``options``: the methods' settings (:class:`gradcam_cli.settings.MethodOptions`: Score-CAM's,
    smoothing, ``centre_activations``), as ``explain``'s flags give them."""

    def __init__(self, images, *, log_dir=None, every: int = 1, top: int | None = 1,
                 classes: Sequence[int] | None = None, method="gradcam", layer: str = "auto", display=None,
                 names: Sequence[str] | None = None, class_names: Sequence[str] | None = None, alpha: float = 0.4,
                 colormap: str = "jet", mlflow: bool = False, wandb: bool = False,
                 options: MethodOptions | None = None):
        super().__init__()
        self.images = np.asarray(images, dtype=np.float32)
        if self.images.ndim != 4:
            raise ValueError(f"images must be an (N, H, W, C) batch of model inputs; got shape {self.images.shape}")
        if log_dir is None and not mlflow and not wandb:
            raise ValueError("GradCAMCallback logs nowhere: give log_dir=..., mlflow=True or wandb=True")
        if int(every) < 1:
            raise ValueError(f"every must be a whole number of epochs >= 1; got {every}")
        for tracker, asked in (("tensorboard", log_dir is not None), ("mlflow", mlflow), ("wandb", wandb)):
            if asked:
                require(tracker)  # a missing extra is said now, not after the first epoch
        self.display = display_images(self.images) if display is None else np.asarray(display, dtype=np.uint8)
        if len(self.display) != len(self.images):
            raise ValueError(f"display holds {len(self.display)} pictures for {len(self.images)} images")
        self.names = list(names) if names is not None else [f"image_{i:02d}" for i in range(len(self.images))]
        self.log_dir = None if log_dir is None else pathlib.Path(log_dir) / SUBFOLDER
        self.every, self.layer, self.method = int(every), layer, method
        self.top, self.classes = (None, list(classes)) if classes is not None else (top, None)
        self.class_names = None if class_names is None else list(class_names)
        self.alpha, self.colormap = float(alpha), colormap_id(colormap)
        self.mlflow, self.wandb = mlflow, wandb
        self.options = options or MethodOptions()
        self.explainer: Explainer | None = None
        self._built_for = None
        self._summaries = None  # the compiled TensorBoard step, with its writer

    def on_train_begin(self, logs=None) -> None:
        if self._built_for is not self.model:  # built once per model: every later fit reuses it
            split = split_model(self.model, self.layer)
            self.explainer = Explainer(split, top=self.top, classes=self.classes, method=self.method,
                                       options=self.options)
            self._built_for = self.model
            self._summaries = None
        if self.log_dir is not None and self._summaries is None:
            self._summaries = self._summary_step()

    def _summary_step(self):
        """One compiled step writing every image's overlays and caption (traced once): eager
        ``tf.summary`` calls, one per image, would cost more than the maps themselves."""
        import tensorflow as tf

        require("tensorboard")
        writer = tf.summary.create_file_writer(str(self.log_dir))
        count = self.explainer.n * len(self.explainer.methods)
        spec = [tf.TensorSpec((len(self.names), count, None, None, 3), tf.uint8),
                tf.TensorSpec((len(self.names),), tf.string), tf.TensorSpec((), tf.int64)]

        @tf.function(input_signature=spec)
        def write(pictures, captions, step):
            with writer.as_default():
                for i, name in enumerate(self.names):
                    tf.summary.image(f"gradcam/{name}", pictures[i], step=step, max_outputs=count,
                                     description="Grad-CAM overlays, one per explained class and method; "
                                                 "the caption (text tab) names them")
                    tf.summary.text(f"gradcam/{name}/caption", captions[i], step=step)

        def write_and_flush(pictures, captions, step):
            write(pictures, captions, step)
            writer.flush()  # each epoch's maps are on disk when it ends

        return write_and_flush

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if (epoch + 1) % self.every:
            return
        items = self.overlays(epoch)
        if self._summaries is not None:
            self._summaries(np.stack([pictures for _, pictures, _ in items]),
                            np.array([caption for *_, caption in items], dtype=object), np.int64(epoch))
        if self.mlflow:
            mlflow_images(items, step=epoch)
        if self.wandb:
            wandb_images(items, step=epoch)

    def _label(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(index)

    def overlays(self, epoch: int) -> list[tuple[str, np.ndarray, str]]:
        """(tag, (k, H, W, 3) uint8 RGB overlays: each class, then each method, caption) per image."""
        out = self.explainer(self.images)
        methods = [m.name for m in self.explainer.methods]
        items = []
        for i, name in enumerate(self.names):
            n, m, h, w = out.method_maps[i].shape
            bgr = overlays(self.display[i], out.method_maps[i].reshape(n * m, h, w), alpha=self.alpha,
                           colormap=self.colormap)
            pictures = np.stack([picture[..., ::-1] for picture in bgr])
            explained = ", ".join(f"{self._label(int(c))} {float(out.probs[i, c]):.3f}" for c in out.classes[i])
            caption = f"epoch {epoch + 1}: {', '.join(methods)} maps of {explained}"
            items.append((f"gradcam/{name}", pictures, caption))
        return items

    def trace_count(self) -> int:
        """How many times the compiled pass was traced (1 after any number of epochs)."""
        return 0 if self.explainer is None else self.explainer.trace_count()
