"""Small transformers for the tests: a functional ViT built from MultiHeadAttention layers and a
Swin-like model whose stages stay (B, H, W, C), both from standard Keras layers and ops only
(so they save as .keras / .h5 and load without custom objects), and their training on the
synthetic scenes of :mod:`builders` (one coloured square at a random place, 3 classes)."""

from __future__ import annotations

import keras
import numpy as np
from builders import SIZE, scenes
from keras import layers, ops

PATCH = 8


def _learned_tokens(x, count: int, dim: int, name: str):
    """(B, count, dim) learned tokens (a class token, registers, position embeddings) from standard
    layers: a Dense layer's bias read on zeros."""
    zeros = ops.zeros_like(x[:, 0, :1])  # (B, 1)
    return layers.Reshape((count, dim), name=f"{name}_tokens")(layers.Dense(count * dim, name=name)(zeros))


def vit_block(x, i: int, dim: int, heads: int):
    h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
    h = layers.MultiHeadAttention(heads, dim // heads, name=f"block{i}_attn")(h, h)
    x = layers.Add(name=f"block{i}_add1")([x, h])
    h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
    h = layers.Dense(2 * dim, activation="gelu", name=f"block{i}_mlp1")(h)
    h = layers.Dense(dim, name=f"block{i}_mlp2")(h)
    return layers.Add(name=f"block{i}_add2")([x, h])


def small_vit(size: int = SIZE, patch: int = PATCH, dim: int = 32, depth: int = 4, heads: int = 4,
              classes: int = 3, prefix: int = 0, pool: str = "mean", seed: int = 0, name: str = "vit",
              positions: bool = True) -> keras.Model:
    """Patch embedding (Conv2D, kernel = stride = ``patch``), ``prefix`` learned tokens (a class token
    and registers) before the patch tokens, learned position embeddings, ``depth`` pre-norm blocks,
    a final LayerNorm and a head on the class token (``pool="cls"``), the patch tokens' mean (``"mean"``) or maximum (``"max"``).
    ``positions=False`` (with no prefix and the mean): layers only, no ``keras.ops`` call, as the
    legacy .h5 format can load."""
    keras.utils.set_random_seed(seed)
    grid = size // patch
    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(inp)
    x = layers.Reshape((grid * grid, dim), name="patches")(x)
    if positions:
        x = layers.Add(name="pos_add")([x, _learned_tokens(x, grid * grid, dim, "pos_embed")])
    if prefix:
        x = layers.Concatenate(axis=1, name="with_prefix")([_learned_tokens(x, prefix, dim, "prefix"), x])
    for i in range(depth):
        x = vit_block(x, i, dim, heads)
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    if pool == "cls":
        x = x[:, 0]
    else:
        pool_layer = layers.GlobalMaxPooling1D if pool == "max" else layers.GlobalAveragePooling1D
        x = pool_layer(name="pool")(x[:, prefix:] if prefix else x)
    out = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name=name)


def _windows(x, window: int):
    """(B, H, W, C) -> (B * windows, window * window, C)."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // window, window, w // window, window, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, window * window, c))


def _unwindows(x, window: int, h: int, w: int):
    c = x.shape[-1]
    x = ops.reshape(x, (-1, h // window, w // window, window, window, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, h, w, c))


def _relative_index(window: int) -> np.ndarray:
    """(window² x window²,) int32: for each (query, key) pair of a window, row-major, the row of its
    offset (dy, dx) in a (2 window - 1)² table of relative position biases (Swin's indexing)."""
    cells = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    offset = cells[:, :, None] - cells[:, None, :] + window - 1
    return (offset[0] * (2 * window - 1) + offset[1]).reshape(-1).astype("int32")


def window_attention(y, name: str, heads: int, window: int):
    """Swin's window attention on (B, H, W, C): softmax(q k^T / sqrt(d) + B) v in every window, B a learned
    relative position bias per head (a (2 window - 1)² x heads table read by each pair's offset), from
    Dense layers and keras.ops (keras.layers.MultiHeadAttention takes no additive bias)."""
    _, h, w, c = y.shape
    n, d = window * window, c // heads
    qkv = layers.Dense(3 * c, name=f"{name}_qkv")(_windows(y, window))
    qkv = ops.transpose(ops.reshape(qkv, (-1, n, 3, heads, d)), (2, 0, 3, 1, 4))  # 3 x (B * windows, heads, n, d)
    logits = ops.einsum("bhnd,bhmd->bhnm", qkv[0] * d ** -0.5, qkv[1])
    table = layers.Dense((2 * window - 1) ** 2 * heads, name=f"{name}_relative_bias",
                         bias_initializer=keras.initializers.TruncatedNormal(stddev=0.02))(
        ops.zeros_like(y[:1, 0, 0, :1]))  # the bias read on zeros: (1, (2 window - 1)² heads)
    bias = ops.take(ops.reshape(table, ((2 * window - 1) ** 2, heads)), _relative_index(window), axis=0)
    logits = logits + ops.transpose(ops.reshape(bias, (n, n, heads)), (2, 0, 1))
    out = ops.einsum("bhnm,bhmd->bhnd", ops.softmax(logits, axis=-1), qkv[2])
    out = layers.Dense(c, name=f"{name}_proj")(ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, n, c)))
    return _unwindows(out, window, h, w)


def swin_block(x, name: str, heads: int, window: int, relative: bool = True):
    """Window attention on a (B, H, W, C) stage, which stays 4-D around it: :func:`window_attention`
    (``relative``), else keras.layers.MultiHeadAttention in each window (no position bias)."""
    _, h, w, c = x.shape
    y = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm1")(x)
    if relative:
        a = window_attention(y, name, heads, window)
    else:
        t = _windows(y, window)
        a = _unwindows(layers.MultiHeadAttention(heads, c // heads, name=f"{name}_attn")(t, t), window, h, w)
    x = layers.Add(name=f"{name}_add1")([x, a])
    y = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm2")(x)
    y = layers.Dense(2 * c, activation="gelu", name=f"{name}_mlp1")(y)
    y = layers.Dense(c, name=f"{name}_mlp2")(y)
    return layers.Add(name=f"{name}_add2")([x, y])


def small_swin(size: int = SIZE, dim: int = 24, classes: int = 3, seed: int = 0, name: str = "swin",
               window: int = 2, relative: bool = True) -> keras.Model:
    """Patch embedding (4 x 4) + LayerNorm -> stage 1 (size / 4 square, one block) -> patch merging (2 x 2
    cells -> 1, LayerNorm, Dense to 2 dim) -> stage 2 (size / 8 square, two blocks) -> LayerNorm -> mean
    -> Dense: every stage (B, H, W, C). As in Swin, windows of ``window`` x ``window`` cells in both stages
    tile the grid and nest across the merge, and each window's attention has a learned relative position
    bias (``relative=False``: keras.layers.MultiHeadAttention without one)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(dim, 4, strides=4, name="patch_embed")(inp)
    x = layers.LayerNormalization(epsilon=1e-5, name="embed_norm")(x)
    x = swin_block(x, "stage1_block0", 2, window, relative)
    _, h, w, c = x.shape
    x = ops.reshape(ops.transpose(ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c)), (0, 1, 3, 2, 4, 5)),
                    (-1, h // 2, w // 2, 4 * c))
    x = layers.LayerNormalization(epsilon=1e-5, name="merge_norm")(x)
    x = layers.Dense(2 * dim, use_bias=False, name="merge")(x)
    x = swin_block(x, "stage2_block0", 4, window, relative)
    x = swin_block(x, "stage2_block1", 4, window, relative)
    x = layers.LayerNormalization(epsilon=1e-5, name="norm")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    out = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name=name)


def train(model: keras.Model, n: int = 1200, epochs: int = 8, seed: int = 0, lr: float = 3e-3) -> keras.Model:
    """Adam on ``n`` softmax scenes (seeded); returns the model."""
    x, y, _ = scenes("softmax", n, seed=seed)
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def held_out(n: int = 200, seed: int = 99) -> tuple[np.ndarray, np.ndarray, list]:
    return scenes("softmax", n, seed=seed)
