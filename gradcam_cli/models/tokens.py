"""Token layers as maps: a (B, T, C) target layer read as a (B, h, w, C) grid.

A vision transformer's layers output one vector per token: P *prefix* tokens (a class
token, a distillation token, register tokens) and then h x w patch tokens, row-major
(the patch embedding's convolution output flattened). A target layer of that shape
becomes a map by dropping the prefix and reshaping the rest to (h, w, C); every CAM
method then sees the grid exactly as it sees a CNN's feature map.

Where the model does not say the grid (:func:`token_layout`):

- ``grid`` (``--token-grid HxW``) and ``prefix`` (``--prefix-tokens N``) when given;
- else the patch size of the patch embedding (the first ``Conv2D`` before the layer whose
  kernel equals its strides): the grid is (input height / p, input width / p), and the
  prefix the tokens left over;
- else the fewest prefix tokens (0 to :data:`MAX_PREFIX`) that leave a count forming a grid
  with the input's aspect ratio (a square for a square input).

Anything else is refused before the run, in one line naming the layer, its shape and the flag.
Swin-style (B, H, W, C) stages are 4-D already and need none of this.

The head part of a split model needs more than the grid: the prefix tokens (the class
token's row is the target tensor's too) and, in a transformer, the residual stream that
bypasses the chosen layer. :func:`carried_keys` finds those tensors; the trunk hands them
to the head beside the grid (see :mod:`gradcam_cli.models.split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradcam_cli.errors import OptionError

#: the most prefix tokens guessed without --prefix-tokens (class + distillation + 4 registers = 6)
MAX_PREFIX = 8

#: layers that normalise (the default target in a transformer block is one of them)
NORMALISATIONS = ("LayerNormalization", "RMSNormalization", "GroupNormalization", "BatchNormalization")


@dataclass(frozen=True)
class TokenLayout:
    """How a (B, T, C) layer's tokens form a grid: ``prefix`` tokens first, then ``grid`` (h, w) row-major."""

    prefix: int
    grid: tuple[int, int]

    @property
    def tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    def to_grid(self, tokens: Any) -> Any:
        """(B, T, C) -> (B, h, w, C): the prefix dropped, the rest row-major."""
        import tensorflow as tf

        h, w = self.grid
        return tf.reshape(tokens[:, self.prefix:], [-1, h, w, tokens.shape[-1]])

    def from_grid(self, grid: Any, prefix_tokens: Any) -> Any:
        """(B, h, w, C) and the prefix tokens (B, P, C) -> (B, T, C), the inverse of :meth:`to_grid`."""
        import tensorflow as tf

        h, w = self.grid
        flat = tf.reshape(grid, [-1, h * w, grid.shape[-1]])
        if self.prefix == 0:
            return flat
        return tf.concat([tf.cast(prefix_tokens, flat.dtype), flat], axis=1)

    def to_json(self) -> dict:
        return {"prefix_tokens": self.prefix, "grid": list(self.grid)}


def parse_grid(text: str) -> tuple[int, int]:
    """``"14x14"`` -> (14, 14); ValueError with the expected form otherwise."""
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"a token grid is HEIGHTxWIDTH in tokens, e.g. 14x14; got {text!r}")
    return int(parts[0]), int(parts[1])


def _patch_size(graph: Any, key: Any) -> int | None:
    """The patch size of the first Conv2D before ``key`` whose square kernel equals its strides (> 1)."""
    from keras import layers

    needed = graph.ancestors([key])
    for step in graph.steps:
        op = step.op
        if id(step) in needed and isinstance(op, layers.Conv2D) and type(op) is not layers.Conv2DTranspose:
            kernel, strides = tuple(op.kernel_size), tuple(op.strides)
            if kernel == strides and kernel[0] == kernel[1] and kernel[0] > 1:
                return int(kernel[0])
    return None


def _factor(count: int, size: tuple[int | None, int | None]) -> tuple[int, int] | None:
    """An h x w grid of ``count`` cells with the input's aspect ratio (a square when it is unknown)."""
    height, width = size
    if height and width:
        for h in range(1, count + 1):
            if count % h == 0 and h * width == (count // h) * height:
                return h, count // h
        return None
    root = round(count ** 0.5)
    return (root, root) if root * root == count else None


def _refuse(path: str, shape: tuple, why: str, hint: str = "--layer") -> OptionError:
    return OptionError(
        f"layer '{path}' has token output shape {shape}: {why}; pass --token-grid HxW and --prefix-tokens N "
        f"(or the profile's token_grid / prefix_tokens), or another {hint}"
    )


def token_layout(graph: Any, key: Any, path: str, input_size: tuple, grid: tuple[int, int] | None = None,
                 prefix: int | None = None, hint: str = "--layer") -> TokenLayout | None:
    """The layout of the target tensor ``key`` (None for a 4-D layer, or a volume model's 5-D one, which
    :func:`gradcam_cli.models.targets.resolve_target` admitted); see the module docstring.
    ``input_size``: the model input's (height, width), None where not fixed."""
    shape = tuple(graph.tensors[key].shape)
    if len(shape) in (4, 5):
        return None
    tokens = shape[1] if len(shape) == 3 else None
    if len(shape) != 3:
        raise OptionError(
            f"layer '{path}' has output shape {shape}, not 4-D (batch, height, width, channels) nor 3-D tokens "
            "(batch, tokens, channels); pass --layer with a 4-D or token layer (`gradcam layers` lists them)"
        )
    if tokens is None:
        raise _refuse(path, shape, "its token count is not fixed", hint)
    tokens = int(tokens)
    if grid is not None:
        left = tokens - grid[0] * grid[1] if prefix is None else prefix
        if not 0 <= left <= (MAX_PREFIX if prefix is None else tokens) or left + grid[0] * grid[1] != tokens:
            said = f"0 to {MAX_PREFIX}" if prefix is None else str(prefix)
            raise _refuse(path, shape, f"{tokens} tokens are not {said} prefix tokens + a {grid[0]}x{grid[1]} grid", hint)
        return TokenLayout(left, tuple(grid))
    if prefix is not None:
        found = _factor(tokens - prefix, input_size) if 0 <= prefix < tokens else None
        if found is None:
            raise _refuse(path, shape, f"{tokens} tokens less {prefix} prefix tokens do not form a grid", hint)
        return TokenLayout(prefix, found)
    patch = _patch_size(graph, key)
    height, width = input_size
    if patch and height and width and height % patch == 0 and width % patch == 0:
        h, w = height // patch, width // patch
        if 0 <= tokens - h * w <= MAX_PREFIX:
            return TokenLayout(tokens - h * w, (h, w))
    for left in range(min(MAX_PREFIX, tokens - 1) + 1):
        found = _factor(tokens - left, input_size)
        if found is not None and found[0] * found[1] > 1:
            return TokenLayout(left, found)
    raise _refuse(path, shape, f"{tokens} tokens do not form a grid after 0 to {MAX_PREFIX} prefix tokens", hint)


def carried_keys(head_steps: list, target: Any) -> list:
    """The tensors the head reads besides ``target`` (a residual stream that bypasses it, the model
    input, ...): inputs of head steps that no head step produces."""
    made = {k for step in head_steps for k in step.outputs}
    seen: dict = {}
    for step in head_steps:
        for k in step.inputs:
            if k != target and k not in made:
                seen.setdefault(k, None)
    return list(seen)


def attention_steps(graph: Any, keys: list) -> list:
    """The MultiHeadAttention steps the tensors ``keys`` depend on, in graph order."""
    from keras import layers

    needed = graph.ancestors(keys)
    return [s for s in graph.steps if id(s) in needed and isinstance(s.op, layers.MultiHeadAttention)]


def block_normalisations(graph: Any, output_keys: list) -> dict[str, Any]:
    """The normalisation steps around the last attention layer the outputs depend on: ``"first"`` feeds
    its query (the last block's first LayerNorm), ``"second"`` is the first after it (before the
    block's MLP), ``"final"`` the last one on the way to the output (the model's final norm, where it
    has one; else the last block's second). Missing ones are left out; {} without attention.
    :func:`transformer_auto` chooses among them."""
    found = attention_steps(graph, output_keys)
    if not found:
        return {}
    out: dict[str, Any] = {}
    key, hops = found[-1].inputs[0], 0
    while key in graph.producer and hops < 8:  # back through reshapes (window partitions) to the norm
        producer = graph.producer[key]
        if type(producer.op).__name__ in NORMALISATIONS:
            out["first"] = producer
            break
        if len(producer.inputs) != 1:
            break
        key, hops = producer.inputs[0], hops + 1
    needed = graph.ancestors(output_keys)
    order = [s for s in graph.steps if id(s) in needed]
    after = [s for s in order[order.index(found[-1]) + 1:] if type(s.op).__name__ in NORMALISATIONS
             and len(s.outputs) == 1 and len(graph.tensors[s.outputs[0]].shape) in (3, 4)]
    if after:
        out["second"], out["final"] = after[0], after[-1]
    return out


#: which normalisation ``--layer auto`` takes in a transformer: measured on the test ViT
#: (docs/transformers.md), the final one localises where the head pools every token; the last
#: block's first and second do not there. Where the head reads one token (a class token), the
#: final norm's patch tokens get no gradient: then the last block's first (pytorch-grad-cam's)
AUTO_NORM = "final"

#: operations that pool over every token / position (the head reads them all)
POOLING = ("GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Mean",
           "Max")


def pooled(graph: Any, step: Any, hops: int = 4) -> bool:
    """Whether ``step``'s output reaches a pooling over all its tokens (:data:`POOLING`) through at most
    ``hops`` steps that keep its rank (a slice dropping the prefix tokens, a norm), not a pick of one
    token (a class token's row, which drops the token axis)."""
    consumers: dict = {}
    for s in graph.steps:
        for k in s.inputs:
            consumers.setdefault(k, []).append(s)
    keys = [step.outputs[0]]
    for _ in range(hops):
        following = []
        for key in keys:
            rank = len(graph.tensors[key].shape)
            for user in consumers.get(key, []):
                if type(user.op).__name__ in POOLING:
                    return True
                if len(user.outputs) == 1 and len(graph.tensors[user.outputs[0]].shape) == rank:
                    following.append(user.outputs[0])
        keys = following
    return False


def transformer_auto(graph: Any, output_keys: list, which: str = AUTO_NORM) -> Any | None:
    """The automatic target step of a transformer (the explained output depends on a
    MultiHeadAttention layer): the normalisation ``which`` of :func:`block_normalisations`, the
    final one only where it is :func:`pooled`; else the last block's first, then its second.
    None without attention."""
    norms = block_normalisations(graph, output_keys)
    final = norms.get("final")
    if final is not None and not pooled(graph, final):
        norms.pop("final")
    for name in (which, "final", "first", "second"):
        step = norms.get(name)
        if step is not None and len(graph.tensors[step.outputs[0]].shape) in (3, 4):
            return step
    return None


def is_transformer(graph: Any, output_keys: list) -> bool:
    """Whether the outputs depend on attention: a MultiHeadAttention layer, or a token model's pooled
    final norm (:func:`pooled_token_norm`; keras-hub's Swin)."""
    return bool(attention_steps(graph, output_keys)) or pooled_token_norm(graph, output_keys) is not None


#: Keras attention layers and ops besides MultiHeadAttention and its subclasses (:func:`attends`)
ATTENTION_OPS = ("GroupedQueryAttention", "Attention", "AdditiveAttention", "DotProductAttention")
#: steps that multiply two tensors: attention's query-key product before its softmax, weights-value after
_PRODUCTS = ("Einsum", "Matmul", "Dot")
#: steps between the query-key product and the softmax (a scale, a bias, a mask) or after it (dropout)
_BETWEEN = ("Multiply", "Add", "Subtract", "Divide", "TrueDivide", "Where", "Reshape", "Transpose", "Dropout", "Cast")


def attends(graph: Any, keys: list) -> bool:
    """Whether the tensors ``keys`` depend on attention of any kind: a MultiHeadAttention (or a subclass),
    another Keras attention layer or ``keras.ops.dot_product_attention`` (:data:`ATTENTION_OPS`), or
    attention written with keras.ops: a softmax over scores a product of two tensors made, whose output
    a product reads (Swin's window attention with its relative position bias, which MultiHeadAttention
    cannot add). A softmax gate over a CNN's positions or channels, or a classifier's, is not one."""
    from keras import layers

    needed = graph.ancestors(keys)
    steps = [s for s in graph.steps if id(s) in needed]
    if any(isinstance(s.op, layers.MultiHeadAttention) or type(s.op).__name__ in ATTENTION_OPS for s in steps):
        return True
    readers: dict = {}
    for step in graph.steps:
        for key in step.inputs:
            readers.setdefault(key, []).append(step)
    return any(_is_softmax(s) and _near(graph, s, readers, up=True) and _near(graph, s, readers, up=False)
               for s in steps)


def _is_softmax(step: Any) -> bool:
    name = type(step.op).__name__
    return name == "Softmax" or (name == "Activation" and getattr(step.op.activation, "__name__", "") == "softmax")


def _near(graph: Any, step: Any, readers: dict, up: bool, hops: int = 4) -> bool:
    """Whether a product step (:data:`_PRODUCTS`) feeds ``step`` (``up``) or reads it, through at most
    ``hops`` steps of :data:`_BETWEEN`."""
    frontier = [step]
    for _ in range(hops):
        if up:
            frontier = [graph.producer[k] for s in frontier for k in s.inputs if k in graph.producer]
        else:
            frontier = [r for s in frontier for k in s.outputs for r in readers.get(k, ())]
        if any(type(s.op).__name__ in _PRODUCTS for s in frontier):
            return True
        frontier = [s for s in frontier if type(s.op).__name__ in _BETWEEN]
    return False


def transformer_layer(graph: Any, key: Any) -> bool:
    """Whether the layer with output ``key`` holds a transformer's features: a token layer (B, T, C), or
    a layer after attention (:func:`attends`). Such features are signed, with no zero that means
    "absent", and a LayerNorm makes their tokens nearly blind to a patch's scale
    (``MethodOptions.centre_activations``, ``MethodOptions.scorecam_baseline``); the convolutional layers
    before any attention (a patch embedding, a CNN under an attention-pooling head) are not."""
    return len(graph.tensors[key].shape) == 3 or attends(graph, [key])


def pooled_token_norm(graph: Any, output_keys: list) -> Any | None:
    """The last normalisation with a (B, T, C) output that the head pools over every token, on the way
    to ``output_keys``: the automatic layer of a token model whose attention is not a
    ``keras.layers.MultiHeadAttention`` (keras-hub's Swin: its stages' own window attention, then a
    final LayerNorm and a mean). None where there is no such step."""
    needed = graph.ancestors(output_keys)
    norms = [s for s in graph.steps if id(s) in needed and type(s.op).__name__ in NORMALISATIONS
             and len(s.outputs) == 1 and len(graph.tensors[s.outputs[0]].shape) == 3]
    return next((s for s in reversed(norms) if pooled(graph, s)), None)


def attention_layout(graph: Any, mha: list, input_size: tuple, grid: tuple[int, int] | None = None,
                     prefix: int | None = None) -> tuple[TokenLayout | None, str | None]:
    """How the tokens of the attention layers ``mha`` form the image's grid, for attention methods:
    ``(layout, None)``, or ``(None, why not)`` (one line): no MultiHeadAttention layer, attention over
    something other than (batch, tokens, channels), layers over different token counts, or fewer
    tokens than the image has patches (Swin-style window attention: scores per window)."""
    use = "attention methods need global self-attention over the image's patch tokens; use a gradient method"
    if not mha:
        return None, (f"model '{graph.model.name}' has no keras.layers.MultiHeadAttention layer on the way to its "
                      f"output: {use}")
    shapes = {step.path: tuple(graph.tensors[step.inputs[0]].shape) for step in mha}
    for path, shape in shapes.items():
        if len(shape) != 3 or shape[1] is None:
            return None, f"attention layer '{path}' attends over a tensor of shape {shape}, not (batch, tokens, channels): {use}"
    patch, (height, width) = _patch_size(graph, mha[0].inputs[0]), input_size
    if grid is None and patch and height and width:
        patches = (height // patch) * (width // patch)
        for path, shape in shapes.items():
            if not 0 <= int(shape[1]) - patches <= MAX_PREFIX:
                return None, (f"attention layer '{path}' attends over {shape[1]} tokens while the image has "
                              f"{patches} patches of {patch}x{patch} pixels: window attention (Swin-style) or a "
                              f"subset of the tokens; {use}")
    if len({shape[1] for shape in shapes.values()}) > 1:
        listing = ", ".join(f"'{p}' {s[1]}" for p, s in shapes.items())
        return None, f"the attention layers attend over different token counts ({listing}): {use}"
    path = next(iter(shapes))
    try:
        return token_layout(graph, mha[0].inputs[0], path, input_size, grid, prefix), None
    except OptionError as exc:
        return None, str(exc)
