"""keras-hub's ViT and DeiT classifiers, rebuilt block by block as a functional graph that shares
their weights, so that every layer inside a transformer block is a node the graph cut can reach.

keras-hub builds a ViT backbone from two opaque layers (patch embedding, encoder): the encoder
runs its blocks in a Python loop inside ``call``, so the blocks' LayerNorms, attention and MLPs
are no nodes of any graph and no target layer can name them. :func:`rebuild` calls the very same
layer objects (nothing copied, nothing mutated) in a new graph:

    images -> <embedding layer> -> transformer_block_1 ... transformer_block_N -> ln
           -> class token (or the token mean) -> [pre_logits] -> predictions [-> softmax]

each block a nested functional model (so ``transformer_block_12/ln_1`` names its first LayerNorm,
as keras-hub's own weight paths do) holding ``ln_1``, ``mha``, ``attention_residual``, ``ln_2``,
``mlp`` and ``mlp_residual`` (DeiT: its ``output_layer`` adds the residual itself). Dropouts are
left out: they are the identity at inference. The rebuilt model's logits equal the original's
(tests/models/test_hub.py).
"""

from __future__ import annotations

from typing import Any

#: backbone class name -> family handled here
FAMILIES = {"ViTBackbone": "vit", "DeiTBackbone": "deit"}


def family_of(classifier: Any) -> str | None:
    """``"vit"`` / ``"deit"`` for a classifier whose backbone this module rebuilds, else None."""
    backbone = getattr(classifier, "backbone", None)
    for cls in type(backbone).__mro__ if backbone is not None else ():
        if cls.__name__ in FAMILIES and cls.__module__.startswith("keras_hub"):
            return FAMILIES[cls.__name__]
    return None


def token_layout(classifier: Any) -> dict | None:
    """How the rebuilt blocks' (B, T, C) tokens lie on the image, from the backbone's config:
    ``{"grid": [h, w], "prefix_tokens": n}`` (T = n + h * w, row-major; n: the class token, plus
    DeiT's distillation token); None for other backbones. What a token-layer reshape needs."""
    family = family_of(classifier)
    if family is None:
        return None
    backbone = classifier.backbone
    patch = backbone.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
    height, width = int(backbone.image_shape[0]), int(backbone.image_shape[1])
    prefix = 2 if family == "deit" else int(bool(getattr(backbone, "use_class_token", True)))
    return {"grid": [height // ph, width // pw], "prefix_tokens": prefix}


def _token_pool_layer():
    import keras

    class TokenPool(keras.layers.Layer):
        """(B, T, C) -> (B, C): the class token (``"token"``: the first) or the mean of all tokens
        (``"gap"``), as ``ViTImageClassifier`` / ``DeiTImageClassifier`` pool."""

        def __init__(self, pooling: str, **kwargs):
            super().__init__(**kwargs)
            self.pooling = pooling

        def call(self, x):
            return x[:, 0] if self.pooling == "token" else keras.ops.mean(x, axis=1)

        def compute_output_shape(self, shape):
            return (shape[0], shape[-1])

        def get_config(self):
            return {**super().get_config(), "pooling": self.pooling}

    return TokenPool


def _block(block: Any, family: str, tokens: int, width: int) -> Any:
    """One encoder block as a functional model named like the block, sharing its layers."""
    import keras

    inp = keras.Input(shape=(tokens, width), name=f"{block.name}_in", dtype=block.compute_dtype)
    x = block.layer_norm_1(inp)
    x = block.mha(x, x)
    x = keras.layers.Add(name="attention_residual")([x, inp])
    y = block.layer_norm_2(x)
    y = block.mlp(y)
    if family == "deit":
        out = block.output_layer(y, x)  # DeiTOutput: dense, dropout, + x
    else:
        out = keras.layers.Add(name="mlp_residual")([x, y])
    return keras.Model(inp, out, name=block.name)


def rebuild(classifier: Any, *, softmax: bool) -> Any:
    """The classifier as a functional model of its own layers, block by block (see the module doc);
    ``softmax``: end with a Softmax layer (the classifier outputs logits)."""
    import keras

    family = family_of(classifier)
    if family is None:
        raise ValueError(f"{type(classifier).__name__} has no ViT or DeiT backbone")
    backbone = classifier.backbone
    embedding = backbone.get_layer(f"{family}_patching_and_embedding")  # images -> tokens
    encoder = backbone.get_layer(f"{family}_encoder")
    shape = tuple(backbone.inputs[0].shape[1:])
    inp = keras.Input(shape=shape, name="images", dtype=backbone.inputs[0].dtype)
    x = embedding(inp)
    tokens, width = int(x.shape[1]), int(x.shape[2])
    for block in encoder.encoder_layers:
        x = _block(block, family, tokens, width)(x)
    x = encoder.layer_norm(x)
    x = _token_pool_layer()(classifier.pooling, name=f"pool_{classifier.pooling}")(x)
    intermediate = getattr(classifier, "intermediate_layer", None)
    if family == "vit" and getattr(classifier, "intermediate_dim", None) is not None and intermediate is not None:
        x = intermediate(x)
    x = classifier.output_dense(x)
    if softmax:
        x = keras.layers.Softmax(name="softmax", dtype="float32")(x)
    return keras.Model(inp, x, name=classifier.name)
