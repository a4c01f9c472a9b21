"""Token layers as maps: every method on a ViT's (B, T, C) layer equals a per-image NumPy /
GradientTape reference (prefix tokens dropped, the rest reshaped row-major) at batch 7 and
batch 1 without a retrace; attention rollout equals its formula in NumPy; the grid and prefix
are found from the model or refused in one line."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import random_images
from transformer_builders import small_swin, small_vit

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.errors import OptionError
from gradcam_cli.methods import METHODS
from gradcam_cli.models.split import split_model
from gradcam_cli.settings import MethodOptions

SIZE, PREFIX = 32, 2  # a class token and a register token before a 4 x 4 grid of 8 x 8 patches
#: float32 maps from differently ordered float32 sums (batched engine vs. one eager image): 1e-5
ATOL = 1e-5
CAM_METHODS = [name for name, m in METHODS.items() if m.kind != "attention" and name not in ("random", "centre")]


def trained_like(model, seed):
    """LayerNorm scales and offsets as training leaves them, not 1 and 0. With offsets 0 a LayerNorm
    output has a channel mean of ~0 at every position, where Eigen-CAM's sign rule (agree with the
    channel mean) is decided by rounding, and channels whose sum over positions is ~0, by which
    XGrad-CAM divides (float32 rounding then exceeds 1e-5): offsets around 1 keep both well posed."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.gamma.assign(1 + 0.3 * rng.standard_normal(layer.gamma.shape).astype(np.float32))
            layer.beta.assign(1 + 0.3 * rng.standard_normal(layer.beta.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def vit():
    return trained_like(small_vit(size=SIZE, depth=2, prefix=PREFIX, pool="cls", seed=3), 3)


def normalised(raw):
    cam = np.maximum(raw, 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def first_component(a):
    """(h, w, K) -> (h, w): centred per channel, projected on the first right singular vector,
    sign so that it correlates with the channel mean (as Eigen-CAM's definition)."""
    flat = a.reshape(-1, a.shape[-1]).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    mean = flat.mean(axis=1)
    return (projection if projection @ (mean - mean.mean()) >= 0 else -projection).reshape(a.shape[:2])


def raw_map(name, a, g, eigen=False, centred=True):
    """One image's raw map from its grid activations a (h, w, K) and gradients g, float64. ``centred``
    (a transformer's default, ``--centre-activations auto``): the weights from a and g as each method defines them,
    times a less its mean over positions, per channel."""
    a, g = a.astype(np.float64), None if g is None else g.astype(np.float64)
    s = a.sum(axis=(0, 1))
    if name == "eigencam":
        return first_component(a)
    weights = channel_weights(name, a, g, s)
    summed = a - a.mean(axis=(0, 1)) if centred else a
    if name in ("layercam", "hirescam"):
        weighted = weights * summed
        return first_component(weighted) if eigen else weighted.sum(-1)
    return first_component(a * weights) if eigen else (summed * weights).sum(-1)


def channel_weights(name, a, g, s):
    """Each method's weights: per channel (K,), or per position and channel (h, w, K)."""
    if name in ("gradcam", "guided"):
        weights = g.mean(axis=(0, 1))
    elif name == "gradcam++":
        weights = (np.maximum(g, 0) * np.where(g != 0, g**2 / (2 * g**2 + s * g**3 + 1e-6), 0.0)).sum(axis=(0, 1))
    elif name == "xgradcam":
        weights = (g * a).sum(axis=(0, 1)) / (s + 1e-7)
    elif name in ("layercam", "hirescam"):
        weights = np.maximum(g, 0) if name == "layercam" else g
    else:
        raise ValueError(name)
    return weights


class Reference:
    """Eager, one image at a time: the layer's tokens -> grid, the score before softmax, its tape."""

    def __init__(self, model, layer, prefix, grid):
        dense = model.get_layer("predictions")
        self.sub = keras.Model(model.inputs[0], [model.get_layer(layer).output, dense.input])
        self.dense, self.prefix, self.grid, self.model = dense, prefix, grid, model

    def grid_of(self, tokens):
        return tokens[0, self.prefix:].reshape(*self.grid, -1)

    def logits(self, x):
        return tf.matmul(self.sub(x, training=False)[1], self.dense.kernel) + self.dense.bias

    def tape(self, image, cls):
        """(grid activations, grid gradients, input gradient) for one class."""
        x = tf.constant(image[None])
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            tokens, features = self.sub(x, training=False)
            score = (tf.matmul(features, self.dense.kernel) + self.dense.bias)[0, cls]
        grads = tape.gradient(score, tokens).numpy()
        return self.grid_of(tokens.numpy()), self.grid_of(grads), tape.gradient(score, x)[0].numpy()

    def scorecam(self, image, cls, centred=True, toward="mean"):
        """Score-CAM by its definition: each channel upsampled, min-max normalised, masks the input (the
        input times the mask, ``toward="zero"``, or the image's mean colour plus the mask times the
        input less it, ``"mean"``)."""
        a = self.grid_of(self.sub(image[None], training=False)[0].numpy())
        up = tf.image.resize(a[None], image.shape[:2], method="bilinear")[0].numpy()
        low, high = up.min(axis=(0, 1)), up.max(axis=(0, 1))
        span = high - low
        masks = np.where(span > 1e-8, (up - low) / (span + 1e-8), 0.0).astype(np.float32)
        base = image.mean(axis=(0, 1)) if toward == "mean" else np.zeros(image.shape[-1], np.float32)
        masked = base + np.moveaxis(masks, -1, 0)[..., None] * (image - base)[None]
        scores = self.logits(masked).numpy()[:, cls].astype(np.float64)
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        return normalised(((a - a.mean(axis=(0, 1)) if centred else a) * weights).sum(-1))

    def maps(self, image, cls, methods, options=None):
        options = options or MethodOptions()
        centred = options.centre_activations != "off"
        toward = "zero" if options.scorecam_baseline == "zero" else "mean"  # this ViT is a transformer
        a, g, dx = self.tape(image, cls)
        out, guided = {}, None
        for name in methods:
            if name == "scorecam":
                out[name] = self.scorecam(image, cls, centred, toward)
            else:
                out[name] = normalised(raw_map(name, a, g, options.eigen_smooth, centred))
            if name == "guided":  # no ReLU in this ViT: guided backpropagation is the plain input gradient
                up = tf.image.resize(out[name][None, ..., None].astype(np.float32), image.shape[:2])[0, ..., 0].numpy()
                guided = dx * up[..., None]
        return out, guided


@pytest.mark.parametrize("centre,baseline", [("auto", "auto"), ("off", "zero")])
def test_every_method_on_a_token_layer_equals_the_reference_at_batch_7_and_1_without_retrace(vit, centre, baseline):
    """``auto`` centres a transformer's maps and masks its Score-CAM inputs toward each image's mean
    (docs/transformers.md); ``off`` and ``zero`` keep each method's own definition."""
    split = split_model(vit, "block1_norm1")
    assert split.tokens.prefix == PREFIX and split.tokens.grid == (4, 4) and split.cut and split.transformer
    assert split.feature_shape == (4, 4, 32)
    options = MethodOptions(centre_activations=centre, scorecam_baseline=baseline)
    explainer = Explainer(split, top=2, method=CAM_METHODS, options=options)
    assert explainer.centred == (centre == "auto") and explainer.masked_toward == ("mean" if baseline == "auto" else "zero")
    ref = Reference(vit, "block1_norm1", PREFIX, (4, 4))
    x = random_images(7, SIZE, seed=5)
    for batch in (x, x[:1]):
        out = explainer(batch)
        for b in range(len(batch)):
            for j, cls in enumerate(out.classes[b]):
                expected, guided = ref.maps(batch[b], int(cls), CAM_METHODS, options)
                for i, name in enumerate(CAM_METHODS):
                    assert expected[name].max() > 0, name  # a vacuous comparison would pass anything
                    np.testing.assert_allclose(out.method_maps[b, j, i], expected[name], atol=ATOL,
                                               err_msg=f"{name}, image {b}, class {cls}")
                np.testing.assert_allclose(out.guided[b, j], guided, atol=ATOL, err_msg=f"guided, image {b}")
    assert explainer.trace_count() == 1


def test_eigen_smoothed_gradient_methods_on_a_token_layer_equal_the_reference(vit):
    methods = ["gradcam", "layercam"]
    explainer = Explainer(split_model(vit, "block1_norm2"), classes=[0, 2], method=methods,
                          options=MethodOptions(eigen_smooth=True))
    ref = Reference(vit, "block1_norm2", PREFIX, (4, 4))
    x = random_images(3, SIZE, seed=6)
    out = explainer(x)
    for b in range(3):
        for j, cls in enumerate((0, 2)):
            expected, _ = ref.maps(x[b], cls, methods, MethodOptions(eigen_smooth=True))
            for i, name in enumerate(methods):
                np.testing.assert_allclose(out.method_maps[b, j, i], expected[name], atol=ATOL, err_msg=name)


def test_aug_smoothed_maps_on_a_token_layer_average_the_six_passes(vit):
    explainer = Explainer(split_model(vit, "block0_norm2"), top=1, method="gradcam",
                          options=MethodOptions(aug_smooth=True))
    ref = Reference(vit, "block0_norm2", PREFIX, (4, 4))
    x = random_images(2, SIZE, seed=7)
    out = explainer(x)
    for b in range(2):
        cls = int(out.classes[b, 0])
        passes = []
        for flip in (False, True):
            for factor in (0.9, 1.0, 1.1):
                seen = (x[b][:, ::-1] if flip else x[b]) * np.float32(factor)
                m = ref.maps(np.ascontiguousarray(seen), cls, ["gradcam"])[0]["gradcam"]
                passes.append(m[:, ::-1] if flip else m)
        np.testing.assert_allclose(out.maps[b, 0], normalised(np.mean(passes, axis=0)), atol=ATOL)


def rollout_reference(model, image, prefix):
    """Abnar & Zuidema's rollout in NumPy from each attention layer's scores, called eagerly."""
    attn = [layer for layer in model.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    norms = keras.Model(model.inputs[0], [model.get_layer(a.name.replace("attn", "norm1")).output for a in attn])
    rolled = None
    for layer, q in zip(attn, norms(image[None], training=False)):
        scores = layer(q, q, return_attention_scores=True, training=False)[1].numpy()[0].astype(np.float64)
        mixed = 0.5 * scores.mean(axis=0) + 0.5 * np.eye(scores.shape[-1])
        mixed /= mixed.sum(axis=-1, keepdims=True)
        rolled = mixed if rolled is None else mixed @ rolled
    return read_rolled(rolled, prefix)


def read_rolled(rolled, prefix):
    """A rolled (T, T) matrix -> the 4 x 4 map: the class token's row over the patches, or the mean row."""
    row = rolled[0] if prefix else rolled.mean(axis=0)
    return normalised(row[prefix:].reshape(4, 4))


def rollout_model(vit, prefix):
    """The class-token ViT, or (prefix 0) a mean-pooled one without prefix tokens."""
    return vit if prefix else trained_like(small_vit(size=SIZE, depth=2, prefix=0, pool="mean", seed=4), 4)


@pytest.mark.parametrize("prefix", [PREFIX, 0])
def test_rollout_equals_its_numpy_reference_at_batch_7_and_1(vit, prefix):
    model = rollout_model(vit, prefix)
    split = split_model(model)
    assert split.attention_layers == 2 and split.attention_tokens.prefix == prefix
    beside = Explainer(split, top=3, method=["rollout", "gradcam"])  # scores from one more run to the last attention
    alone = Explainer(split, top=3, method="rollout")  # scores from the one forward run
    x = random_images(7, SIZE, seed=8)
    for explainer in (beside, alone):
        for batch in (x, x[:1]):
            out = explainer(batch)
            np.testing.assert_allclose(out.probs, model.predict(batch, verbose=0), atol=1e-6)
            for b in range(len(batch)):
                expected = rollout_reference(model, batch[b], prefix)
                for j in range(3):  # class-agnostic: the same map for every class
                    np.testing.assert_allclose(out.method_maps[b, j, 0], expected, atol=ATOL)
        assert explainer.trace_count() == 1


def vit_logits(model, x, scores: list):
    """small_vit's forward pass written out eagerly from its layers (not the library's graph walk), each
    MultiHeadAttention called with return_attention_scores so its scores, appended to ``scores``, are
    the tensors its output is computed from; returns the class logits."""
    names = {layer.name for layer in model.layers}
    dim = model.get_layer("patch_embed").filters
    t = model.get_layer("patches")(model.get_layer("patch_embed")(x))
    if "pos_embed" in names:
        t = t + tf.reshape(model.get_layer("pos_embed").bias, (1, -1, dim))
    prefix = 0
    if "prefix" in names:
        tokens = tf.reshape(model.get_layer("prefix").bias, (1, -1, dim))
        prefix = int(tokens.shape[1])
        t = tf.concat([tf.tile(tokens, [tf.shape(x)[0], 1, 1]), t], axis=1)
    blocks = sorted({name.split("_")[0] for name in names if name.startswith("block")})
    for block in blocks:
        h = model.get_layer(f"{block}_norm1")(t)
        out, found = model.get_layer(f"{block}_attn")(h, h, return_attention_scores=True)
        scores.append(found)
        t = t + out
        t = t + model.get_layer(f"{block}_mlp2")(model.get_layer(f"{block}_mlp1")(model.get_layer(f"{block}_norm2")(t)))
    t = model.get_layer("norm")(t)
    pooled = t[:, 0] if "pool" not in names else tf.reduce_mean(t[:, prefix:], axis=1)
    dense = model.get_layer("predictions")
    return tf.matmul(pooled, dense.kernel) + dense.bias


def gradrollout_reference(model, image, cls, prefix):
    """Chefer, Gur & Wolf's rule in NumPy: R = I, R += mean_heads(relu(dy_c/dA * A)) R per layer, from the
    scores of :func:`vit_logits` and their gradients by GradientTape; the map read from R - I."""
    scores: list = []
    with tf.GradientTape() as tape:
        logit = vit_logits(model, tf.constant(image[None]), scores)[0, cls]
    grads = tape.gradient(logit, scores)
    relevance = None
    for a, g in zip(scores, grads):
        a, g = a.numpy()[0].astype(np.float64), g.numpy()[0].astype(np.float64)
        weighted = np.maximum(a * g, 0).mean(axis=0)
        relevance = np.eye(a.shape[-1]) if relevance is None else relevance
        relevance = relevance + weighted @ relevance
    return read_rolled(relevance - np.eye(relevance.shape[-1]), prefix)


@pytest.mark.parametrize("prefix", [PREFIX, 0])
def test_gradient_weighted_rollout_equals_its_reference_at_batch_7_and_1(vit, prefix):
    """gradrollout beside a gradient method (classes from the tiled pass) and alone (the forward pass), per class."""
    model = rollout_model(vit, prefix)
    split = split_model(model)
    x = random_images(7, SIZE, seed=10)
    for explainer in (Explainer(split, top=3, method=["gradrollout", "gradcam"]), Explainer(split, top=3, method="gradrollout")):
        for batch in (x, x[:1]):
            out = explainer(batch)
            for b in range(len(batch)):
                maps = [gradrollout_reference(model, batch[b], int(cls), prefix) for cls in out.classes[b]]
                for j, expected in enumerate(maps):
                    assert expected.max() > 0
                    np.testing.assert_allclose(out.method_maps[b, j, 0], expected, atol=ATOL, err_msg=f"image {b}, rank {j}")
                assert max(np.abs(maps[0] - m).max() for m in maps[1:]) > 1e-3  # it depends on the class
        assert explainer.trace_count() == 1


def test_the_grid_comes_from_the_patch_embedding_or_the_flags(vit):
    assert split_model(vit, "with_prefix").tokens.grid == (4, 4)
    assert split_model(vit, "patches").tokens.prefix == 0  # before the prefix tokens are added
    flagged = split_model(vit, "block0_norm1", token_grid=(4, 4), prefix_tokens=PREFIX)
    assert flagged.tokens.grid == (4, 4) and flagged.tokens.prefix == PREFIX
    wide = split_model(vit, "block0_norm1", token_grid=(2, 8))  # what the user says goes
    assert wide.tokens.grid == (2, 8) and wide.tokens.prefix == PREFIX


def odd_token_model():
    """60 tokens from a Dense layer: no patch embedding, and 60 less 0 to 8 is never a square (52..60)."""
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Reshape((60, 1))(keras.layers.Dense(60)(keras.layers.Flatten()(inp)))
    x = keras.layers.Dense(8, name="tokens")(x)
    x = keras.layers.Dense(4, name="flat")(keras.layers.Flatten()(x))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


def test_refusals_name_the_layer_its_shape_and_the_flag(vit):
    with pytest.raises(OptionError) as err:
        split_model(odd_token_model(), "tokens")
    assert str(err.value) == (
        "layer 'tokens' has token output shape (None, 60, 8): 60 tokens do not form a grid after 0 to 8 prefix "
        "tokens; pass --token-grid HxW and --prefix-tokens N (or the profile's token_grid / prefix_tokens), "
        "or another --layer")
    with pytest.raises(OptionError, match=r"layer 'block0_norm1' has token output shape \(None, 18, 32\): 18 tokens "
                                          r"are not 2 prefix tokens \+ a 3x3 grid; pass --token-grid"):
        split_model(vit, "block0_norm1", token_grid=(3, 3), prefix_tokens=2)
    with pytest.raises(OptionError, match=r"layer 'flat' of model '\w+' has output shape \(None, 4\), not 4-D .* "
                                          r"nor 3-D tokens .*; pass --layer with a 4-D or token layer"):
        split_model(odd_token_model(), "flat")


@pytest.mark.parametrize("method", ["rollout", "gradrollout"])
def test_rollout_refuses_window_attention_and_models_without_attention(method):
    swin = split_model(small_swin(size=SIZE, window=4, relative=False))  # MultiHeadAttention in 4 x 4 windows
    with pytest.raises(OptionError, match=r"attention layer 'stage1_block0_attn' attends over 16 tokens while the "
                                          r"image has 64 patches of 4x4 pixels: window attention \(Swin-style\)"):
        Explainer(swin, top=1, method=method)
    cnn = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    for model in (cnn, small_swin(size=SIZE)):  # the Swin-like model's own window attention (relative bias)
        with pytest.raises(OptionError, match=r"has no keras.layers.MultiHeadAttention layer on the way to its output"):
            Explainer(split_model(model), top=1, method=method)


def test_swin_stages_stay_four_d_and_match_the_tape():
    model = small_swin(size=SIZE)
    split = split_model(model)
    assert split.tokens is None and split.feature_shape == (4, 4, 48) and split.layer_name == "norm"
    x = random_images(3, SIZE, seed=9)
    explainer = Explainer(split, top=2, method=["gradcam", "layercam"])
    assert explainer.centred  # its window attention (einsum and softmax) is attention: auto centres its maps
    out = explainer(x)
    dense = model.get_layer("predictions")
    sub = keras.Model(model.inputs[0], [model.get_layer(split.layer_name).output, dense.input])
    for b in range(3):
        for j, cls in enumerate(out.classes[b]):
            with tf.GradientTape() as tape:
                a, features = sub(x[b:b + 1], training=False)
                score = (tf.matmul(features, dense.kernel) + dense.bias)[0, int(cls)]
            g = tape.gradient(score, a)[0].numpy()
            for i, name in enumerate(("gradcam", "layercam")):
                np.testing.assert_allclose(out.method_maps[b, j, i], normalised(raw_map(name, a[0].numpy(), g)),
                                           atol=ATOL)


def test_the_automatic_layer_follows_what_the_head_reads():
    """The final norm where the head pools every token (a mean-pooled ViT, Swin's 4-D stage, a backbone
    pooled outside); the last block's first norm where it reads the class token alone (the final
    norm's patch tokens would get no gradient)."""
    assert split_model(small_vit(size=SIZE, depth=2, prefix=1, pool="cls")).layer_name == "block1_norm1"
    assert split_model(small_vit(size=SIZE, depth=2, prefix=2, pool="mean")).layer_name == "norm"
    assert split_model(small_swin(size=SIZE)).layer_name == "norm"
    inner = small_vit(size=SIZE, depth=2, prefix=1, pool="cls", name="inner")
    backbone = keras.Model(inner.inputs[0], inner.get_layer("norm").output, name="vit_backbone")
    inp = keras.Input((SIZE, SIZE, 3))
    outer = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling1D()(
        backbone(inp))))
    assert split_model(outer).layer_name == "vit_backbone/norm"


def test_attention_written_with_keras_ops_makes_its_layers_transformer_layers():
    """Swin's window attention written with einsum and a softmax over (B, heads, n, n) (a relative position
    bias, which MultiHeadAttention cannot add) is attention: the layers after it are a transformer's (their
    maps centred, Score-CAM's masks toward the mean under ``auto``); its patch embedding is not, nor is a
    CNN's layer under a softmax classifier head."""
    from builders import small_cnn

    swin = small_swin()
    after, before = split_model(swin, "stage2_block1_add2"), split_model(swin, "patch_embed")
    assert after.transformer and not before.transformer
    assert [Explainer(s, top=1, method="scorecam").masked_toward for s in (after, before)] == ["mean", "zero"]
    assert not split_model(small_cnn("softmax"), "target").transformer


class OwnAttention(keras.layers.MultiHeadAttention):
    """A user's MultiHeadAttention subclass (as keras-hub's CachedMultiHeadAttention is one)."""


def test_attention_subclasses_count_and_softmax_gates_do_not():
    """A MultiHeadAttention subclass is attention; a CNN's softmax gate over its positions (or channels), with no
    query-key product before it nor a weights-value product after it, is not."""
    inp = keras.Input((SIZE, SIZE, 3))
    t = keras.layers.Reshape((16, 192))(keras.layers.Conv2D(192, 8, strides=8)(inp))
    t = OwnAttention(2, 8, name="own_attn")(t, t)
    grid = keras.layers.Reshape((4, 4, 192), name="grid")(t)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(grid))
    assert split_model(keras.Model(inp, out), "grid").transformer
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    gate = keras.layers.Softmax(axis=(1, 2), name="where")(keras.layers.Conv2D(1, 1)(x))
    gated = keras.layers.Multiply(name="gated")([x, gate])
    channels = keras.layers.Activation("softmax", name="channels")(gated)
    feats = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(channels)
    cnn = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(feats)))
    split = split_model(cnn, "target")
    assert not split.transformer and Explainer(split, top=1, method="scorecam").masked_toward == "zero"
