"""Videos through a video model: input (batch, T, H, W, C), a Conv3D over (T, H, W) or a
time-distributed 2-D CNN; maps over time.

Each video's kept frames are cut into clips of T consecutive frames (the model's time length; the
last clip, when shorter, is filled by repeating its last frame, and only its real frames are
written). A clip is explained by the compiled :class:`~gradcam_cli.engine.volume.VolumeExplainer`
(the target layer's (t, h, w, K) activations read as a volume: Grad-CAM's weights are the gradients
averaged over time and space), and its (t, h, w) map is brought to the clip's T frames by linear
interpolation in time (half-frame centres, as a resize), then drawn on each frame at the frame's
size, as the frame-by-frame run draws it (:class:`~gradcam_cli.run.video.Clip`): the same files,
records, resume and shards. Every frame of a clip shares the clip's classes and probabilities.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np

from gradcam_cli.methods.registry import masks_input
from gradcam_cli.render.resample import upsample_linear
from gradcam_cli.results import Explanation, Prediction
from gradcam_cli.run.video import Clip, FrameRange, VideoStep
from gradcam_cli.run.volumes import VolumeModel


def in_time(maps: np.ndarray, frames: int) -> np.ndarray:
    """(..., t, h, w) -> (..., frames, h, w): linear interpolation along time with half-frame centres
    (frame i sits at (i + 0.5) * t / frames - 0.5 of the map's time axis, clamped to its ends)."""
    t = maps.shape[-3]
    position = np.clip((np.arange(frames) + 0.5) * t / frames - 0.5, 0, t - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, t - 1)
    weight = (position - low).astype(np.float32)[:, None, None]
    return (1 - weight) * np.take(maps, low, axis=-3) + weight * np.take(maps, high, axis=-3)


def clip_input(frames: list, vm: VolumeModel, settings) -> np.ndarray:
    """(1, T, H, W, C) float32: each frame resized to the model's (H, W) (RGB, or its luma for C = 1),
    through ``--preprocess`` (none, scale: /255, tf: /127.5 - 1, mean_std: one mean and std)."""
    from gradcam_cli.io.preprocess import resize

    _, height, width = vm.size
    x = np.stack([resize(f.rgb, (height, width)) for f in frames]).astype(np.float32)
    if vm.channels == 1:
        x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    mode, s = settings.model.preprocessing or "none", settings.model
    if mode == "scale":
        x = x / 255.0
    elif mode == "tf":
        x = x / 127.5 - 1.0
    elif mode == "mean_std":
        x = (x - np.float32(np.ravel([s.mean])[0])) / np.float32(np.ravel([s.std])[0])
    return np.ascontiguousarray(x[None], np.float32)


class ClipStep(VideoStep):
    """:class:`VideoStep` for a video model: clips of T frames instead of batches of frames."""

    def __init__(self, vm: VolumeModel, settings, video, out_dir, pool):
        import pathlib

        from gradcam_cli.engine.volume import VolumeExplainer
        from gradcam_cli.render.overlay import colormap_id

        t = settings.targets
        self.vm, self.settings, self.video, self.pool, self.out_dir = vm, settings, video, pool, pathlib.Path(out_dir)
        self.cam = SimpleNamespace(class_names=vm.names)
        self.indices = [vm.names.resolve(c, vm.split.num_classes) for c in t.classes] or None
        self.n = len(self.indices) if self.indices else min(t.top, vm.split.num_classes)
        self.methods = list(settings.methods)
        self.alpha, self.colormap = settings.outputs.overlay.alpha, colormap_id(settings.outputs.overlay.colormap)
        self.upsample = upsample_linear
        self.range = FrameRange(video.stride, video.max_frames, video.start, video.end)
        self.length = int(vm.size[0])
        self.batch_size = self.length
        self.explainer = VolumeExplainer(vm.split, top=None if self.indices else self.n, classes=self.indices,
                                         method=settings.methods, options=settings.method_options)

    def describe(self) -> dict:
        split = self.vm.split
        return {"model": self.settings.model.model, "target_layer": split.layer_name,
                "target_layer_shape": list(split.feature_shape), "input_shape": [*self.vm.size, self.vm.channels],
                "head": split.head_type, "video_model": True, "clip_frames": self.length}

    def recorded(self) -> dict:
        return {**self.settings.to_json(), "model.backbone": "video", **self.video.to_json(),
                **self.settings.method_options.resolved(self.vm.split.transformer, masks_input(self.settings.methods))}

    def _explain(self, reader, clip: Clip) -> None:
        """One clip of ``length`` frames ahead (the last one padded with its final frame), explained whole;
        the previous clip drawn while the model runs."""
        from gradcam_cli.run.video import Smoother, explain_overlapped

        frames = iter(reader)

        def read() -> tuple[list, list]:
            chunk = list(itertools.islice(frames, self.length))
            return chunk, chunk

        def explain(chunk: list) -> list[Explanation]:
            return self.clip_results(chunk + [chunk[-1]] * (self.length - len(chunk)))[:len(chunk)]

        explain_overlapped(self.pool, read, explain, clip, Smoother(self.video.smooth))

    def clip_results(self, frames: list) -> list[Explanation]:
        """One :class:`Explanation` per frame of a clip: the clip's targets, each frame's maps."""
        out = self.explainer(clip_input(frames, self.vm, self.settings))
        probs = out.probs[0]
        classes = [int(c) for c in out.classes[0][: self.n]]
        order = np.argsort(-probs, kind="stable")
        rank = {int(c): i + 1 for i, c in enumerate(order)}
        predictions = [Prediction(rank=rank[c], class_index=c, class_id=None, label=self.vm.names.label(c),
                                  probability=float(probs[c])) for c in classes]
        maps = in_time(out.method_maps[0][: self.n], len(frames))  # (N, M, T, h, w)
        results = []
        for i in range(len(frames)):
            by_method = {m: np.ascontiguousarray(maps[:, k, i], np.float32) for k, m in enumerate(self.methods)}
            results.append(Explanation(predictions=predictions, maps=by_method[self.methods[0]], probabilities=probs,
                                       maps_by_method=by_method))
        return results
