"""Shared test builders: synthetic scenes with an object at a known place, small CNNs trained on
them (cached per session), an independent per-image GradientTape reference, model snapshots."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf

SIZE, OBJ = 48, 12
PALETTE = np.array([[0.9, 0.15, 0.15], [0.15, 0.8, 0.15], [0.15, 0.15, 0.9]], np.float32)  # red, green, blue


# ---------------------------------------------------------------------------
# synthetic scenes


def _free_box(rng, taken):
    for _ in range(1000):
        y0, x0 = (int(v) for v in rng.integers(0, SIZE - OBJ + 1, 2))
        if all(abs(y0 - y1) >= OBJ + 2 or abs(x0 - x1) >= OBJ + 2 for y1, x1 in taken):
            return y0, x0
    raise AssertionError("no room for another square")


def scenes(kind: str, n: int, seed: int):
    """Grey noise with coloured squares. Returns (x, y, boxes): boxes[i] maps a class to its square.

    softmax: one square, label = its colour (3 classes). multilabel: each colour present
    with probability 1/2 (at least one), label vector = which are. binary: one square,
    red (1) or blue (0). regression: one red square of brightness b in [0.5, 1], y = b.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.45, 0.08, (n, SIZE, SIZE, 3)).clip(0, 1).astype(np.float32)
    ys, boxes = [], []
    for i in range(n):
        if kind == "softmax":
            label = int(rng.integers(0, 3))
            colours, y = {label: PALETTE[label]}, label
        elif kind == "multilabel":
            present = rng.random(3) < 0.5
            if not present.any():
                present[rng.integers(0, 3)] = True
            colours, y = {c: PALETTE[c] for c in np.flatnonzero(present)}, present.astype(np.float32)
        elif kind == "binary":
            label = int(rng.integers(0, 2))
            colours, y = {label: PALETTE[0] if label == 1 else PALETTE[2]}, label
        elif kind == "regression":
            b = float(rng.uniform(0.5, 1.0))
            colours, y = {0: b * np.array([1.0, 0.3, 0.3], np.float32)}, b
        else:
            raise ValueError(kind)
        placed = {}
        for c, colour in colours.items():
            y0, x0 = _free_box(rng, list(placed.values()))
            x[i, y0 : y0 + OBJ, x0 : x0 + OBJ] = (colour + rng.normal(0, 0.03, (OBJ, OBJ, 3))).clip(0, 1)
            placed[int(c)] = (y0, x0)
        ys.append(y)
        boxes.append(placed)
    return x, np.asarray(ys), boxes


def peak_pixel(cam) -> tuple[int, int] | None:
    """The map's peak in image pixels: the map upsampled bilinearly (as the overlays), then the middle of
    the flat top holding the first maximum (the pixel of that plateau nearest its centroid). None for a
    map without a positive value, or whose flat top is wider than one map cell (it points nowhere).

    Why the middle: cv2's bilinear resize clamps at the border, so a peak cell on the map's edge becomes
    a plateau of s/2 x s pixels (s the scale; 4 x 8 for a 6 x 6 map at 48 px) whose first pixel in
    row-major order is the image's edge or corner: a plain argmax put the peak of every edge cell there,
    off an object that covers most of that cell."""
    up = cv2.resize(np.asarray(cam, np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    top = float(up.max())
    if not top > 0:
        return None
    flat = (up >= top * (1 - 1e-6)).astype(np.uint8)
    _, labels = cv2.connectedComponents(flat, connectivity=8)
    first = np.unravel_index(int(np.argmax(up)), up.shape)
    ys, xs = np.nonzero(labels == labels[first])
    if len(ys) > (SIZE / cam.shape[0]) * (SIZE / cam.shape[1]):
        return None  # a flat top wider than one map cell (a constant map) singles out no place
    nearest = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return int(ys[nearest]), int(xs[nearest])


def peak_on(cam, box) -> bool:
    """Whether the map's peak (:func:`peak_pixel`) lies on the square whose top-left corner is ``box``."""
    peak = peak_pixel(cam)
    if peak is None:
        return False
    y0, x0 = box
    return bool(y0 <= peak[0] < y0 + OBJ and x0 <= peak[1] < x0 + OBJ)


# ---------------------------------------------------------------------------
# the reference tape


def tape_map(f, image: np.ndarray, score) -> np.ndarray:
    """One image, one score: ``f(x) -> (activations, logits)``, ``score(logits) -> scalar``."""
    with tf.GradientTape() as tape:
        acts, logits = f(tf.constant(image[None]))
        tape.watch(acts)
        value = score(logits)
    grads = tape.gradient(value, acts)[0].numpy()
    acts = acts[0].numpy()
    cam = np.maximum((acts * grads.mean(axis=(0, 1))).sum(axis=-1), 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def dense_logits(model: keras.Model, layer: str, dense: keras.layers.Dense):
    """f(x) -> (activations of ``layer``, logits of ``dense``) for a flat model."""
    sub = keras.Model(model.inputs[0], [model.get_layer(layer).output, dense.input])

    def f(x):
        acts, features = sub(x, training=False)
        return acts, tf.matmul(features, dense.kernel) + dense.bias

    return f


def score_of(head_type: str, class_index: int):
    if head_type == "binary":  # one logit z: class 1 = z, class 0 = -z
        return lambda logits: logits[0, 0] if class_index == 1 else -logits[0, 0]
    return lambda logits: logits[0, class_index]


def assert_maps_match(f, head_type, x, result, atol=1e-5, nonzero=True):
    seen_nonzero = False
    for b in range(x.shape[0]):
        for j, c in enumerate(result.classes[b]):
            ref = tape_map(f, x[b], score_of(head_type, int(c)))
            seen_nonzero |= bool(ref.max() > 0)
            np.testing.assert_allclose(result.maps[b, j], ref, atol=atol, err_msg=f"image {b}, class {c}")
    if nonzero:
        assert seen_nonzero, "every reference map is empty: the comparison would be vacuous"


class CamSlice:
    """The first ``n`` images of a CamBatch (classes and maps), for the reference check."""

    def __init__(self, result, n):
        self.classes = result.classes[:n]
        self.maps = result.maps[:n]


def snapshot(model: keras.Model):
    """Everything split_model / Explainer must leave alone, nested models included."""
    layers = []

    def walk(m):
        for layer in m.layers:
            layers.append(layer)
            if isinstance(layer, keras.Model):
                walk(layer)

    walk(model)
    return (
        [w.copy() for w in model.get_weights()],
        [(layer.name, len(layer._inbound_nodes), getattr(getattr(layer, "activation", None), "__name__", None))
         for layer in layers],
    )


def assert_unchanged(model, before):
    weights, layers = snapshot(model)
    assert layers == before[1]
    for a, b in zip(before[0], weights):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# one small CNN per head type, trained here


def small_cnn(kind: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if kind == "softmax":
        out = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
        loss = "sparse_categorical_crossentropy"
    elif kind == "multilabel":  # the sigmoid as its own layer
        x = keras.layers.Dense(3, name="logits")(x)
        out = keras.layers.Activation("sigmoid", name="probs")(x)
        loss = "binary_crossentropy"
    elif kind == "binary":
        out = keras.layers.Dense(1, activation="sigmoid", name="is_red")(x)
        loss = "binary_crossentropy"
    else:
        out = keras.layers.Dense(1, name="brightness")(x)
        loss = "mse"
    model = keras.Model(inp, out, name=f"own_{kind}")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    return model


_TRAINED: dict = {}


def trained(kind: str) -> keras.Model:
    if kind not in _TRAINED:
        model = small_cnn(kind)
        x, y, _ = scenes(kind, 1200, seed=1)
        model.fit(x, y.astype(np.float32) if kind != "softmax" else y, epochs=5, batch_size=64, verbose=0)
        _TRAINED[kind] = model
    return _TRAINED[kind]


# ---------------------------------------------------------------------------
# a localisation scene and CNN: objects large against the target layer's receptive field and stride

BOX_IMAGE = (72, 108)  # (height, width) of the localisation scenes: not square
BOX_INPUT = 96  # the localisation CNN's square input; scenes are resized to it, as the CLI resizes images
BOX_SIDES = (14, 28)  # each object's height and width, drawn independently, inclusive


def box_scenes(n: int, seed: int, image=BOX_IMAGE, sides=BOX_SIDES):
    """Grey noise (as :func:`scenes`) with a rectangle of each colour present with probability 1/2
    (at least one), each side uniform in ``sides``, two or more pixels apart from the others.

    Returns (x, y, boxes): x (n, height, width, 3) float32 in [0, 1], y (n, 3) the multilabel
    targets, boxes[i] maps a present class to its rectangle ``[x0, y0, x1, y1]`` in scene pixels,
    inclusive-exclusive as :func:`gradcam_cli.render.boxes.map_box` returns boxes.
    """
    height, width = image
    lo, hi = sides
    rng = np.random.default_rng(seed)
    x = rng.normal(0.45, 0.08, (n, height, width, 3)).clip(0, 1).astype(np.float32)
    ys, boxes = [], []
    for i in range(n):
        present = rng.random(3) < 0.5
        if not present.any():
            present[rng.integers(0, 3)] = True
        placed: dict = {}
        for c in np.flatnonzero(present):
            for _ in range(1000):
                h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
                y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                if all(y0 >= b[3] + 2 or b[1] >= y0 + h + 2 or x0 >= b[2] + 2 or b[0] >= x0 + w + 2
                       for b in placed.values()):
                    break
            else:
                raise AssertionError("no room for another rectangle")
            x[i, y0 : y0 + h, x0 : x0 + w] = (PALETTE[c] + rng.normal(0, 0.03, (h, w, 3))).clip(0, 1)
            placed[int(c)] = [x0, y0, x0 + w, y0 + h]
        ys.append(present.astype(np.float32))
        boxes.append(placed)
    return x, np.asarray(ys), boxes


def box_inputs(x: np.ndarray) -> np.ndarray:
    """Scenes resized to the localisation CNN's input with the CLI's own resize."""
    from gradcam_cli.io.preprocess import resize

    return np.stack([resize(image, (BOX_INPUT, BOX_INPUT)) for image in x])


def box_cnn() -> keras.Model:
    """A multilabel CNN whose target layer sees little beyond an object of 14-28 px.

    4 x 4 patches with stride 4 (96 -> 24 x 24), then the target, a 3 x 3 convolution: stride 4,
    receptive field 12 px of the input (13.5 px wide and 9 px high in a 108 x 72 scene; stride
    4.5 x 3 px). Sigmoid outputs, so each class's logit has to respond to its own colour (a softmax
    over the three colours can score one of them as "neither of the others", and its Grad-CAM map
    then covers the background). Global max pooling: with average pooling, objects of 2-10% of
    the image train slowly (the same CNN and training: every label right for 0.38 of held-out
    scenes, boxes about twice the object, IoU >= 0.5 for 0.53 of them).
    """
    keras.utils.set_random_seed(0)
    inp = keras.Input((BOX_INPUT, BOX_INPUT, 3))
    x = keras.layers.Conv2D(32, 4, strides=4, activation="relu", name="patches")(inp)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    x = keras.layers.Dense(3, name="logits")(x)
    out = keras.layers.Activation("sigmoid", name="probs")(x)
    model = keras.Model(inp, out, name="box_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    return model


def trained_box_cnn() -> keras.Model:
    """:func:`box_cnn` trained on 800 scenes of seed 1 (5 epochs, 4-6 s on two cores), cached."""
    if "box" not in _TRAINED:
        model = box_cnn()
        x, y, _ = box_scenes(800, seed=1)
        model.fit(box_inputs(x), y, epochs=5, batch_size=64, verbose=0)
        _TRAINED["box"] = model
    return _TRAINED["box"]


def last_dense(model: keras.Model) -> keras.layers.Dense:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]


EXPECTED = {  # head_type, activation, num_classes
    "softmax": ("softmax", "softmax", 3),
    "multilabel": ("multilabel", "sigmoid", 3),
    "binary": ("binary", "sigmoid", 2),
    "regression": ("linear", "linear", 1),
}


def mobilenet_wrapped(style: str):
    keras.utils.set_random_seed(3)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    if style == "sequential":
        model = keras.Sequential(
            [keras.Input((96, 96, 3)), base, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, activation="softmax")],
            name="wrapped_seq",
        )
    else:
        inp = keras.Input((96, 96, 3))
        x = base(inp, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x), name="wrapped_fn")
    return model, base


def two_headed(as_dict: bool):
    keras.utils.set_random_seed(7)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="target")(inp)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(pooled)
    size = keras.layers.Dense(2, name="size")(pooled)
    outputs = {"kind": kind, "size": size} if as_dict else [kind, size]
    return keras.Model(inp, outputs, name="two_headed")


# ---------------------------------------------------------------------------
# a model with a custom layer: saved, it needs --custom-objects (CUSTOM_SOURCE defines the layer)


CUSTOM_SOURCE = '''
import keras


class ChannelScale(keras.layers.Layer):
    """Multiplies each channel by a learned factor."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def helper():
    return 1
'''


class ChannelScale(keras.layers.Layer):
    """The same class as CUSTOM_SOURCE's, defined here to build and save the model."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def custom_model() -> keras.Model:
    keras.utils.set_random_seed(8)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = ChannelScale(name="scaled")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    model.get_layer("scaled").scale.assign(np.linspace(0.5, 2.0, 6).astype(np.float32))
    return model


def grey_cnn(size: int = 64) -> keras.Model:
    """A 1-channel (grey, X-ray-like) model: Conv2D -> GAP -> Dense, 3 classes."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="predictions")(x), name="grey")


def mean_reader(size: int = 32) -> keras.Model:
    """A 1-channel model whose one linear output is the mean of its input (a 1x1 convolution of
    weight 1, global average pooling, a unit Dense): a run's ``value`` reads back what it was fed."""
    inp = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="target")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros", name="value")(x)
    return keras.Model(inp, out, name="mean_reader")


# ---------------------------------------------------------------------------
# volumes: one bright blob at a random place in a noisy cube, and a small Conv3D model

VOLUME = 16  # the synthetic volumes' side, voxels
BLOB = 2.0  # the blob's radius, voxels


def blob_volumes(n: int, seed: int, side: int = VOLUME):
    """(x (n, side, side, side, 1) float32, y (n,) 0 = noise only / 1 = a blob, centres (n, 3) or -1).

    Noise N(0, 0.1) (as the zero padding: no edge to learn); a blob is the ball of radius :data:`BLOB` around a centre drawn at least 3
    voxels from the faces, at 1.0 (+ noise 0.05)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, (n, side, side, side, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(y)
    centres = np.full((n, 3), -1, np.int64)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), axis=-1)
    for i in np.flatnonzero(y):
        c = rng.integers(3, side - 3, 3)
        centres[i] = c
        ball = ((grid - c) ** 2).sum(-1) <= BLOB ** 2
        x[i, ball, 0] = 1.0 + rng.normal(0, 0.05, int(ball.sum()))
    return x, y, centres


def in_blob(index, centre, margin: float = 0.0) -> bool:
    """Whether voxel ``index`` lies in the ball of radius BLOB (+ ``margin``) around ``centre``."""
    return float(((np.asarray(index) - np.asarray(centre)) ** 2).sum()) <= (BLOB + margin) ** 2


def conv3d_model(side: int = VOLUME, channels: int = 1) -> keras.Model:
    """Conv3D(8) -> Conv3D(8, 'target') at full resolution -> global max pool -> Dense(2) -> softmax."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((side, side, side, channels))
    x = keras.layers.Conv3D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv3D(8, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalMaxPooling3D()(x)
    x = keras.layers.Dense(2, name="logits")(x)
    out = keras.layers.Activation("softmax", name="probs")(x)
    model = keras.Model(inp, out, name="blob3d")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def trained_conv3d() -> keras.Model:
    """:func:`conv3d_model` trained on 256 volumes of seed 1 (blob or not), cached per session."""
    if "conv3d" not in _TRAINED:
        model = conv3d_model()
        x, y, _ = blob_volumes(256, seed=1)
        model.fit(x, y, epochs=6, batch_size=32, verbose=0)
        _TRAINED["conv3d"] = model
    return _TRAINED["conv3d"]
