"""The only module that builds or loads Keras models and reaches into their graphs.

``build_model`` turns a :class:`~gradcam_cli.profiles.Profile` into a Keras
model (pretrained, random, or from a local weights file); ``load_user_model``
loads a user's saved ``.keras`` / ``.h5`` model. ``split_model`` cuts a
functional or Sequential model at its target layer (also inside nested models)
into a *trunk* (input -> activations) and a *head* (activations -> class scores
before the final softmax / sigmoid), without mutating the model: the graph is
re-threaded through the same layer objects, nested models inlined node by node.

Target layers are addressed by *path*:

- ``conv5_block3_out``: a layer of the model itself (a top-level name always wins);
- ``resnet50/conv5_block3_out``: a layer inside a nested functional / Sequential
  model, '/'-separated model names, as deep as the nesting goes (the outer
  model's own name may lead: ``my_model/resnet50/conv5_block3_out``);
- ``conv5_block3_out`` when it is not top-level: the one layer of that name
  anywhere in the nesting; several -> ModelError listing their full paths;
- ``resnet50`` (a nested model): its output;
- ``auto``: the last layer, in graph order, with a 4-D output larger than 1x1
  among those the explained output depends on (:func:`auto_layer`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import ModelError, OptionError, WeightsError
from .profiles import Profile, keras_cache_dir

#: final activations that are removed to get the score Grad-CAM differentiates
SQUASHING = ("softmax", "sigmoid")


def _resolve_builder(profile: Profile) -> Callable[..., Any]:
    spec = profile.builder
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"{profile.source}: builder '{spec}' cannot be imported ({exc}); "
            "use 'keras.applications.NAME' or 'package.module:function'"
        ) from None
    if not callable(obj):
        raise ModelError(f"{profile.source}: builder '{spec}' is not callable")
    return obj


def build_model(profile: Profile, weights: str | None = "imagenet") -> Any:
    """Build the profile's model.

    ``weights``: ``"imagenet"`` (the profile's pretrained weights), ``None`` or
    ``"none"`` (random initialisation), or a path to a local weights file.
    Keras' own download messages go to stderr, never to stdout.
    """
    builder = _resolve_builder(profile)
    height, width = profile.input_size
    kwargs = {"input_shape": (height, width, 3)}
    if weights in (None, "none"):
        with contextlib.redirect_stdout(sys.stderr):
            return builder(weights=None, **kwargs)
    if weights == "imagenet":
        return _build_pretrained(profile, builder, kwargs)
    path = pathlib.Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass --weights PATH to an existing file, or --weights none"
        )
    with contextlib.redirect_stdout(sys.stderr):
        model = builder(weights=None, **kwargs)
        try:
            model.load_weights(str(path))
        except Exception as exc:  # keras raises ValueError, OSError, KeyError, ... here
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"cannot load weights {path} into backbone '{profile.name}': {first}; "
                "expected a Keras .weights.h5 / .h5 file saved from the same architecture"
            ) from None
    return model


def _build_pretrained(profile: Profile, builder: Callable[..., Any], kwargs: dict) -> Any:
    cached = keras_cache_dir() / profile.weights_file if profile.weights_file else None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return builder(weights="imagenet", **kwargs)
    except WeightsError:
        raise
    except Exception as exc:
        if cached is not None and not cached.is_file():
            raise WeightsError(
                f"the ImageNet weights of '{profile.name}' are not on this machine and could not be "
                f"downloaded: Keras looks for {cached}; copy {profile.weights_file} there, "
                "pass --weights PATH to a local weights file, or --weights none for random weights"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot build backbone '{profile.name}' with ImageNet weights: {first}") from None


# ---------------------------------------------------------------------------
# loading a user's saved model

_SAVEDMODEL_HINT = (
    "Keras 3 cannot expose the layers of a TensorFlow SavedModel (only an opaque inference endpoint), "
    "so Grad-CAM cannot reach its feature maps; convert it once with TensorFlow <= 2.15 or tf_keras: "
    "`tf.keras.models.load_model('{path}').save('model.keras')` (or 'model.h5'), then pass that file"
)
_MISSING_OBJECT = (
    re.compile(r"Could not locate (class|function) '([^']+)'"),
    re.compile(r"Unknown (layer|object|activation function|activation|loss function|loss|metric function|metric"
               r"|initializer|regularizer|constraint|optimizer)\s*:\s*'?([A-Za-z_][\w.>]*)"),
)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _is_keras_object_class(obj: Any) -> bool:
    import keras

    bases = (
        keras.layers.Layer,
        keras.losses.Loss,
        keras.metrics.Metric,
        keras.initializers.Initializer,
        keras.regularizers.Regularizer,
        keras.constraints.Constraint,
        keras.optimizers.Optimizer,
        keras.optimizers.schedules.LearningRateSchedule,
    )
    if issubclass(obj, bases):
        return True
    return callable(getattr(obj, "get_config", None)) and callable(getattr(obj, "from_config", None))


def load_custom_objects(path: str | os.PathLike) -> dict[str, Any]:
    """Import the Python file ``path`` and return the Keras objects it defines.

    A module-level dict ``CUSTOM_OBJECTS`` is used as it is. Otherwise every public
    class defined in the file that is a Keras layer / model / loss / metric /
    initializer / regularizer / constraint (or anything with ``get_config`` and
    ``from_config``), and every public function defined in it, is returned under
    its own name (and its registered name, for ``@register_keras_serializable``).
    """
    import importlib.util
    import inspect

    import keras

    file = pathlib.Path(path)
    if not file.is_file():
        raise OptionError(f"custom objects file {file} does not exist; pass --custom-objects FILE.py (a Python file)")
    module_name = "gradcam_custom_objects_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise OptionError(f"custom objects file {file} cannot be imported as a Python module; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickling and relative lookups need it registered
    folder = str(file.resolve().parent)
    sys.path.insert(0, folder)  # so that the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise OptionError(
            f"cannot import custom objects file {file}: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)

    table = getattr(module, "CUSTOM_OBJECTS", None)
    if table is not None:
        if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
            raise OptionError(f"custom objects file {file}: CUSTOM_OBJECTS must be a dict of name -> class or function")
        return dict(table)
    objects: dict[str, Any] = {}
    for attr, obj in vars(module).items():
        if attr.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if (inspect.isclass(obj) and _is_keras_object_class(obj)) or inspect.isfunction(obj):
            objects[attr] = obj
            objects.setdefault(getattr(obj, "__name__", attr), obj)
            with contextlib.suppress(Exception):
                objects.setdefault(keras.saving.get_registered_name(obj), obj)
    if not objects:
        raise OptionError(
            f"custom objects file {file} defines no Keras layer, model or function and no CUSTOM_OBJECTS dict"
        )
    return objects


def _check_model_file(file: pathlib.Path) -> None:
    """One-line errors for what Keras would report confusingly (or not at all)."""
    import zipfile

    if not file.exists():
        raise ModelError(f"model {file} does not exist; pass --model PATH to a Keras .keras or .h5 file")
    if file.is_dir():
        if (file / "saved_model.pb").is_file() or (file / "saved_model.pbtxt").is_file():
            raise ModelError(f"model {file} is a TensorFlow SavedModel directory: " + _SAVEDMODEL_HINT.format(path=file))
        raise ModelError(
            f"model {file} is a directory but not a TensorFlow SavedModel (no saved_model.pb); "
            "pass a Keras .keras or .h5 model file"
        )
    if file.name in ("saved_model.pb", "saved_model.pbtxt"):
        raise ModelError(
            f"model {file} is part of a TensorFlow SavedModel: " + _SAVEDMODEL_HINT.format(path=file.parent)
        )
    if file.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(
            f"model {file}: unsupported file type '{file.suffix or '(none)'}'; "
            "expected a Keras 3 .keras file or a legacy .h5 file (lower-case extension)"
        )
    if file.suffix == ".keras" and not zipfile.is_zipfile(file):
        raise ModelError(f"model {file} is not a valid .keras file (not a zip archive): corrupt, truncated or misnamed")
    if file.suffix in (".h5", ".hdf5"):
        with open(file, "rb") as handle:
            head = handle.read(8)
        if head != b"\x89HDF\r\n\x1a\n":
            with contextlib.suppress(Exception):
                import h5py

                if h5py.is_hdf5(str(file)):  # HDF5 with a user block: the signature is further in
                    return
            raise ModelError(f"model {file} is not a valid HDF5 (.h5) file: corrupt, truncated or misnamed")


def _load_error(file: pathlib.Path, exc: BaseException, custom_objects: str | None) -> ModelError:
    chain = _exception_chain(exc)
    texts = [str(e) for e in chain]
    for pattern in _MISSING_OBJECT:
        for text in texts:
            match = pattern.search(text)
            if match:
                kind, name = match.group(1), match.group(2)
                kind = "class" if kind in ("class", "layer", "object") else kind
                where = (
                    f"; {custom_objects} does not define it: add it there (or to its CUSTOM_OBJECTS dict)"
                    if custom_objects
                    else "; pass --custom-objects FILE.py that defines it"
                )
                return OptionError(f"cannot load model {file}: it needs the custom {kind} '{name}'{where}")
    joined = "\n".join(texts)
    if "No model config found" in joined:
        return ModelError(
            f"model {file} holds weights only, not a model architecture; save the whole model with "
            "model.save('model.keras') (or pass it as --weights with a matching backbone)"
        )
    if "safe_mode" in joined:
        return ModelError(
            f"cannot load model {file}: it contains a Lambda layer (arbitrary Python code), which Keras refuses "
            "to load in safe mode; replace the Lambda by a custom layer and pass --custom-objects FILE.py, "
            "or load it with safe_mode=False if you trust the file"
        )
    return ModelError(
        f"cannot load model {file}: {type(exc).__name__}: {_first_line(exc)}; "
        "expected a Keras 3 .keras file or a legacy .h5 file"
    )


def load_user_model(
    path: str | os.PathLike, custom_objects: str | os.PathLike | None = None, *, safe_mode: bool = True
) -> Any:
    """Load a whole Keras model from a ``.keras`` (Keras 3) or ``.h5`` (legacy) file, uncompiled.

    ``custom_objects``: path to a Python file defining the model's custom layers /
    functions (see :func:`load_custom_objects`). TensorFlow SavedModel directories,
    missing / corrupt files and missing custom classes raise :class:`ModelError`
    with one line that names the file and the fix.
    """
    import keras

    file = pathlib.Path(path)
    _check_model_file(file)
    objects = load_custom_objects(custom_objects) if custom_objects is not None else None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = keras.saving.load_model(str(file), custom_objects=objects, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # keras raises TypeError, ValueError, OSError, KeyError, ... here
        raise _load_error(file, exc, None if custom_objects is None else str(custom_objects)) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"model {file} holds a {type(model).__name__}, not a Keras model")
    return model


# ---------------------------------------------------------------------------
# graph surgery
#
# A model is flattened into a list of *steps*: one per node of its Keras graph,
# in topological order, with every nested functional / Sequential model inlined
# (its own layers called node by node on the outer tensors) instead of being
# called as one opaque operation. A tensor is identified by a key
# ``(scope, id(KerasTensor))`` where ``scope`` names the chain of nested-model
# calls; the inputs of an inlined model are aliased to the outer tensors fed to
# it, and the outer outputs of that call to the inner model's outputs. Executing
# the steps from any set of fed keys gives trunk, head and full model alike.


@dataclass(frozen=True)
class LayerInfo:
    """A possible target layer: its path (``outer/inner/layer`` for nested models) and output shape."""

    name: str  # the full '/'-separated path; plain layer name at the top level
    shape: tuple  # output shape without the batch axis
    kind: str = ""  # the layer's class name

    @property
    def path(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class _Step:
    node: Any
    path: str
    inputs: tuple  # keys of node.input_tensors
    outputs: tuple  # keys of node.outputs

    @property
    def op(self) -> Any:
        return self.node.operation


@dataclass
class _Graph:
    model: Any
    steps: list
    input_keys: list
    output_keys: list
    output_names: list  # display name of each output (dict key or producing layer's name)
    output_aliases: list  # every name an output answers to
    tensors: dict  # key -> KerasTensor (static shape and dtype)
    containers: dict  # path of an inlined model -> [(its output keys, the model), one per call]
    producer: dict  # key -> _Step

    def ancestors(self, keys) -> set:
        """Ids of the steps needed to compute ``keys``."""
        seen: set = set()
        stack = [self.producer[k] for k in keys if k in self.producer]
        while stack:
            step = stack.pop()
            if id(step) in seen:
                continue
            seen.add(id(step))
            stack.extend(self.producer[k] for k in step.inputs if k in self.producer)
        return seen


def _graph_of(model: Any) -> Any | None:
    """The Functional that holds ``model``'s graph (itself, or a built Sequential's), else None."""
    import keras

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def _model_call_inputs(node: Any, inner: Any) -> list:
    """The outer KerasTensors fed to the inputs of a nested model, in ``inner.inputs`` order."""
    import keras

    arguments = node.arguments
    structure = arguments.args[0] if arguments.args else arguments.kwargs.get("inputs")
    if isinstance(structure, dict) and not isinstance(inner._inputs_struct, dict):
        with contextlib.suppress(KeyError):
            return [structure[t.name] for t in inner.inputs]
    return keras.tree.flatten(structure)


def _flatten(model: Any) -> _Graph:
    import keras

    top = _graph_of(model)
    if top is None:
        if isinstance(model, keras.Sequential):
            raise ModelError(
                f"Sequential model '{model.name}' has no input shape yet, so it has no layer graph; "
                "build it with keras.Input(shape) as its first layer"
            )
        raise ModelError(
            f"model '{getattr(model, 'name', model)}' is not a functional or Sequential Keras model; "
            "Grad-CAM needs its layer graph (a subclassed model's call() cannot be cut)"
        )
    steps: list = []
    alias: dict = {}
    tensors: dict = {}
    containers: dict = {}

    def key(scope: tuple, tensor: Any) -> tuple:
        k = (scope, id(tensor))
        k = alias.get(k, k)
        tensors.setdefault(k, tensor)
        return k

    def walk(graph: Any, scope: tuple, prefix: str, depth: int) -> None:
        if depth > 64:
            raise ModelError(f"model '{model.name}' nests models more than 64 levels deep")
        for level in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[level]:
                op = node.operation
                if not op or node.is_input:
                    continue
                path = f"{prefix}{op.name}"
                inner = _graph_of(op) if isinstance(op, keras.Model) else None
                if inner is None:
                    step = _Step(
                        node=node,
                        path=path,
                        inputs=tuple(key(scope, t) for t in node.input_tensors),
                        outputs=tuple(key(scope, t) for t in node.outputs),
                    )
                    steps.append(step)
                    continue
                # a nested model: alias its inputs to the outer tensors, inline its nodes
                sub = scope + (id(node),)
                fed = _model_call_inputs(node, inner)
                if len(fed) != len(inner.inputs):
                    raise ModelError(
                        f"nested model '{path}' is called with {len(fed)} tensors for {len(inner.inputs)} inputs; "
                        "cannot inline it"
                    )
                for t_inner, t_outer in zip(inner.inputs, fed):
                    alias[(sub, id(t_inner))] = key(scope, t_outer)
                walk(inner, sub, path + "/", depth + 1)
                inner_outputs = [key(sub, t) for t in inner.outputs]
                for t_outer, k_inner in zip(node.outputs, inner_outputs):
                    alias[(scope, id(t_outer))] = k_inner
                containers.setdefault(path, []).append((tuple(inner_outputs), op))

    input_keys = [key((), t) for t in top.inputs]
    walk(top, (), "", 0)
    output_keys = [key((), t) for t in top.outputs]

    names, aliases = [], []
    flat = keras.tree.flatten_with_path(top._outputs_struct)
    for (where, tensor) in flat:
        layer_name = tensor._keras_history.operation.name
        label = where[-1] if where and isinstance(where[-1], str) else layer_name
        names.append(label)
        aliases.append({label, layer_name})
    producer = {k: step for step in steps for k in step.outputs}
    return _Graph(model, steps, input_keys, output_keys, names, aliases, tensors, containers, producer)


def _squashing_name(fn: Any) -> str | None:
    name = getattr(fn, "__name__", None) or getattr(fn, "name", None)
    if name == "log_softmax":
        return "softmax"  # log-probabilities: the logit before it is the same score
    return name if name in SQUASHING else None


def _squashing_op(op: Any) -> str | None:
    """The squashing function that ``op`` applies last, if any (Dense, Activation, Softmax, keras.ops)."""
    from keras import layers

    if isinstance(op, layers.Softmax):
        return "softmax"
    if isinstance(op, (layers.Dense, layers.Activation)):
        return _squashing_name(op.activation)
    if not isinstance(op, layers.Layer):  # keras.ops.softmax / sigmoid / log_softmax on KerasTensors
        return {"Softmax": "softmax", "LogSoftmax": "softmax", "Sigmoid": "sigmoid"}.get(type(op).__name__)
    return None


#: Dense kernels with at least this many weights get a pre-transposed copy for the backward pass
BIG_KERNEL = 1 << 20
#: a head with a Dense kernel this big (VGG's 25088 x 4096 and 4096 x 4096) is "heavy": Grad-CAM
#: runs it once and back-propagates N times (batch Jacobian) rather than running it N times
HEAVY_KERNEL = 1 << 23


def _big_dense(op: Any, minimum: int = BIG_KERNEL) -> bool:
    """A plain Dense layer (not quantised, no LoRA) with at least ``minimum`` weights."""
    from keras import layers

    return (
        type(op) is layers.Dense
        and int(op.kernel.shape[0]) * int(op.kernel.shape[1]) >= minimum
        and getattr(op, "quantization_mode", None) is None
        and not getattr(op, "lora_enabled", False)
    )


def _transposed_kernels(steps: list, skip: Iterable[int] = ()) -> dict[int, Any]:
    """id(Dense layer) -> its kernel transposed, for the big plain Dense layers among ``steps``
    (but those in ``skip``).

    TensorFlow's gradient of ``x @ W`` computes ``dy @ W^T`` with a transposed-operand
    matmul that is ~5x slower on the CPU than a plain one for VGG's 25088 x 4096
    kernel; a transposed copy (taken once, when the model is cut) makes Grad-CAM's N
    backward passes through the head cheap. Costs the kernel's memory once more.
    """
    import tensorflow as tf

    out = {}
    for step in steps:
        if _big_dense(step.op) and id(step.op) not in skip:
            out[id(step.op)] = tf.constant(tf.transpose(tf.convert_to_tensor(step.op.kernel)))
    return out


def _channel_mean_kernels(steps: list, target: str) -> dict[int, Any]:
    """id(Dense) -> (K, units) kernel averaged over positions, where the head is
    ``target -> MaxPooling2D* -> Flatten -> Dense`` (VGG: block5_conv3 -> pool -> flatten -> fc1).

    Grad-CAM needs only the spatial sum of dY/dA per channel. Max pooling routes each
    gradient to one input cell (sums kept) and Flatten is a reshape, so that sum is the
    sum over positions of ``dy @ W^T``, which is ``positions * dy @ mean_kernel^T``: a
    (K, units) product instead of the whole kernel (VGG16: 512 x 4096 instead of
    25088 x 4096, the largest read of Grad-CAM's backward pass).
    """
    import tensorflow as tf
    from keras import layers

    consumers: dict[str, list] = {}
    for step in steps:
        for key in step.inputs:
            consumers.setdefault(key, []).append(step)
    key = target
    while True:  # along the only consumer of each tensor: max pools, then a Flatten
        users = consumers.get(key, [])
        if len(users) != 1 or len(users[0].outputs) != 1 or users[0].inputs != (key,):
            return {}
        (step,), key = users, users[0].outputs[0]
        if not (type(step.op) is layers.MaxPooling2D and step.op.data_format == "channels_last"):
            break
    if type(step.op) is not layers.Flatten or getattr(step.op, "data_format", "channels_last") != "channels_last":
        return {}
    shape = step.node.input_tensors[0].shape[1:]
    dense = consumers.get(key, [])
    if len(dense) != 1 or len(shape) != 3 or any(d is None for d in shape):
        return {}
    op = dense[0].op
    h, w, k = (int(d) for d in shape)
    if not _big_dense(op) or int(op.kernel.shape[0]) != h * w * k:
        return {}
    if sum(step.op is op for step in steps) != 1:  # a shared layer: its other calls need the exact gradient
        return {}
    kernel = tf.reshape(tf.cast(tf.convert_to_tensor(op.kernel), tf.float32), [h * w, k, -1])
    return {id(op): (tf.constant(tf.transpose(tf.reduce_mean(kernel, axis=0))), h * w)}


def _matmul(x: Any, kernel: Any, transposed: Any | None) -> Any:
    """``x @ kernel``; with ``transposed`` (= kernel^T), its input gradient is a plain matmul.

    ``transposed`` may instead be ``(mean_kernel^T, positions)`` (see
    :func:`_channel_mean_kernels`): the input gradient is then ``dy @ mean_kernel^T``
    repeated at every position, whose per-channel sums over positions are exact (all
    Grad-CAM uses) while the values at single positions are not.
    """
    import tensorflow as tf

    if transposed is None:
        return tf.matmul(x, kernel)

    @tf.custom_gradient
    def matmul(x, k):
        def grad(dy):
            if isinstance(transposed, tuple):
                mean_t, positions = transposed
                return tf.tile(tf.matmul(dy, tf.cast(mean_t, dy.dtype)), [1, positions]), None
            return tf.matmul(dy, tf.cast(transposed, dy.dtype)), None

        return tf.matmul(x, k), grad

    return matmul(x, kernel)


def _dense(op: Any, x: Any, transposed: Any | None, activation: bool = True) -> Any:
    """What ``Dense.call`` computes (2-D input), with the fast input gradient."""
    import tensorflow as tf

    dtype = op.compute_dtype  # mixed precision included
    x = tf.cast(x, dtype)
    y = _matmul(x, tf.cast(tf.convert_to_tensor(op.kernel), dtype), transposed)
    if op.use_bias:
        y = y + tf.cast(tf.convert_to_tensor(op.bias), dtype)
    if activation and op.activation is not None:
        y = op.activation(y)
    return y


def _pre_activation(node: Any, args: tuple, kwargs: dict, transposed: dict | None = None) -> tuple[Any, str | None]:
    """Call ``node``'s operation, but stop before a final softmax / sigmoid.

    Returns ``(output, removed_activation)``. Handles ``Dense(..., activation=...)``
    (weights shared, nothing mutated), stand-alone ``Activation`` / ``Softmax``
    layers and ``keras.ops.softmax`` / ``sigmoid``. Any other operation is called as it is.
    """
    from keras import layers, ops

    op = node.operation
    removed = _squashing_op(op)
    if removed is None:
        return _call(op, args, kwargs, transposed), None
    if isinstance(op, layers.Dense):
        dtype = op.compute_dtype  # what Keras' own call would compute in (mixed precision included)
        if (transposed or {}).get(id(op)) is not None and len(args[0].shape) == 2:
            return _dense(op, args[0], transposed[id(op)], activation=False), removed
        x = ops.cast(args[0], dtype)
        y = ops.matmul(x, ops.cast(op.kernel, dtype))
        if op.use_bias:
            y = ops.add(y, ops.cast(op.bias, dtype))
        return y, removed
    return args[0], removed


def _call(op: Any, args: tuple, kwargs: dict, transposed: dict | None = None) -> Any:
    """Call one operation in inference mode (like ``model(x, training=False)`` does)."""
    if transposed and id(op) in transposed and len(args[0].shape) == 2 and not kwargs:
        return _dense(op, args[0], transposed[id(op)])
    if "training" in getattr(op, "_call_context_args", ()):
        kwargs = {**kwargs, "training": False}
    return op(*args, **kwargs)


def _execute(steps: list, values: dict, last: _Step | None = None, transposed: dict | None = None) -> dict:
    """Run ``steps`` on ``values`` (key -> tensor), in place; ``last`` is called without its squashing.

    A step whose output is already in ``values`` (fed from outside) is not
    recomputed; one whose inputs are not all available is skipped.
    """
    import keras

    for step in steps:
        if any(k in values for k in step.outputs):
            continue
        if any(k not in values for k in step.inputs):
            continue
        local = {id(t): values[k] for t, k in zip(step.node.input_tensors, step.inputs)}
        args, kwargs = step.node.arguments.fill_in(local)
        if step is last:
            result, _ = _pre_activation(step.node, args, kwargs, transposed)
        else:
            result = _call(step.op, args, kwargs, transposed)
        for k, value in zip(step.outputs, keras.tree.flatten(result)):
            values[k] = value
    return values


def _computable(steps: list, fed: set) -> set:
    """The keys computable from ``fed`` alone (no execution, nothing created)."""
    available = set(fed)
    for step in steps:
        if any(k in available for k in step.outputs):
            continue
        if all(k in available for k in step.inputs):
            available.update(step.outputs)
    return available


def _spatial(shape: tuple) -> bool:
    """A (batch, h, w, c) shape whose spatial extent is more than 1 x 1 (unknown sizes count as more)."""
    if len(shape) != 4:
        return False
    h, w = shape[1], shape[2]
    return h is None or w is None or h * w > 1


def _candidates(graph: _Graph, within: set | None = None) -> list:
    """(step, shape) of every step with one 4-D output of spatial extent > 1 x 1, in graph order."""
    found = []
    for step in graph.steps:
        if within is not None and id(step) not in within:
            continue
        if len(step.outputs) != 1 or type(step.op).__name__ == "InputLayer":
            continue
        shape = tuple(graph.tensors[step.outputs[0]].shape)
        if _spatial(shape):
            found.append((step, shape))
    return found


def _select_output(graph: _Graph, output: str | int | None) -> int:
    names = graph.output_names
    listing = ", ".join(f"{i}: '{n}'" for i, n in enumerate(names))
    if output is None:
        if len(names) == 1:
            return 0
        raise OptionError(
            f"model '{graph.model.name}' has {len(names)} outputs ({listing}); "
            "pass --output NAME or INDEX to choose the one to explain"
        )
    if isinstance(output, str):
        matches = [i for i, aliases in enumerate(graph.output_aliases) if output in aliases]
        if matches:
            return matches[0]
        if output.strip().lstrip("-").isdigit():
            output = int(output.strip())
    if isinstance(output, int) and not isinstance(output, bool):
        index = output + len(names) if output < 0 else output
        if 0 <= index < len(names):
            return index
    raise OptionError(
        f"model '{graph.model.name}' has no output {output!r}; its outputs are {listing}: "
        "pass --output with one of these names or indices"
    )


def _auto_step(graph: _Graph, output_keys: list) -> tuple:
    found = _candidates(graph, within=graph.ancestors(output_keys))
    if not found:
        raise OptionError(
            f"model '{graph.model.name}' has no layer with a 4-D output larger than 1x1 on the way to its output; "
            "Grad-CAM needs a convolutional feature map: pass --layer with a 4-D layer"
        )
    return found[-1]


def candidate_layers(model: Any) -> list[LayerInfo]:
    """Every layer (nested models searched) whose output is 4-D with spatial extent > 1x1, in graph order."""
    graph = _flatten(model)
    return [
        LayerInfo(step.path, tuple(shape[1:]), type(step.op).__name__) for step, shape in _candidates(graph)
    ]


def auto_layer(model: Any, output: str | int | None = None) -> str:
    """The path of the last layer with a 4-D, larger-than-1x1 output on the way to the (chosen) output.

    With several outputs and ``output=None``, every output counts.
    """
    graph = _flatten(model)
    keys = graph.output_keys if output is None else [graph.output_keys[_select_output(graph, output)]]
    step, _ = _auto_step(graph, keys)
    return step.path


def _resolve_target(graph: _Graph, name: str) -> tuple[str, tuple, Any]:
    """``(path, key, op)`` of the layer addressed by ``name`` (see :func:`split_model` for the rules)."""
    import difflib

    model = graph.model
    by_path: dict[str, list] = {}
    for step in graph.steps:
        by_path.setdefault(step.path, []).append(step)
    targets: dict[str, list] = {p: [(s.outputs, s.op) for s in ss] for p, ss in by_path.items()}
    for path, calls in graph.containers.items():
        targets.setdefault(path, []).extend(calls)

    wanted = name.strip().strip("/")
    if "/" in wanted and wanted not in targets and wanted.split("/", 1)[0] == model.name:
        wanted = wanted.split("/", 1)[1]  # the model's own name as a leading component is allowed
    if wanted in targets:
        path = wanted
    elif "/" not in wanted:
        nested = sorted({p for p in targets if p.rsplit("/", 1)[-1] == wanted})
        if len(nested) > 1:
            raise OptionError(
                f"layer name '{name}' is ambiguous in model '{model.name}': it matches "
                f"{', '.join(repr(p) for p in nested)}; pass --layer with the full path"
            )
        path = nested[0] if nested else None
    else:
        path = None
    if path is None:
        pool = list(dict.fromkeys([*targets, *sorted({p.rsplit("/", 1)[-1] for p in targets})]))
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise OptionError(
            f"model '{model.name}' has no layer '{name}'{hint}; pass --layer with one of its 4-D layers"
        )
    calls = targets[path]
    if len(calls) > 1:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' is called {len(calls)} times (a shared layer or model), "
            "so its activations are ambiguous; pass --layer with a layer that is used once"
        )
    keys, op = calls[0]
    if len(keys) != 1:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' has {len(keys)} outputs; Grad-CAM needs one 4-D output: "
            "pass --layer with a 4-D layer"
        )
    shape = tuple(graph.tensors[keys[0]].shape)
    if len(shape) != 4:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' has output shape {shape}, not 4-D (batch, height, width, "
            "channels); Grad-CAM needs a convolutional layer: pass --layer with a 4-D layer"
        )
    if keys[0] in graph.input_keys:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' is the model input; pass --layer with a convolutional layer"
        )
    return path, keys[0], op


def target_layer(model: Any, name: str) -> Any:
    """The layer addressed by ``name`` (a name or a nested path), checked to have a 4-D output."""
    _, _, op = _resolve_target(_flatten(model), name)
    return op


#: what the explained score is, per head type (for reports and JSON headers)
SCORE_DESCRIPTIONS = {
    "softmax": "class logit, before softmax",
    "multilabel": "label logit, before sigmoid (each label independent)",
    "binary": "single sigmoid unit: class 1 score = logit, class 0 score = -logit, before sigmoid",
    "linear": "model output (no final softmax or sigmoid found)",
}


@dataclass
class Split:
    """A model cut at its target layer.

    ``trunk(x) -> A``; ``head(A) -> scores`` (None when the cut is impossible);
    ``full(x) -> (A, scores)`` always works. Scores are float32 (batch, num_classes).

    ``activation`` turns scores into probabilities ("softmax", "sigmoid" or
    "linear" = none); ``head_type`` says what a score is:

    - ``"softmax"``: one logit per class (softmax removed);
    - ``"multilabel"``: one logit per label (K > 1 sigmoid units removed);
    - ``"binary"``: one sigmoid unit with logit z exposed as two classes,
      scores ``[-z, z]``, so ``sigmoid(scores) == [1 - p, p]``;
    - ``"linear"``: the output units as they are (regression, or no squashing found).

    ``layer_name`` is the resolved target path (``outer/inner/layer`` inside
    nested models); ``output_name`` / ``output_index`` say which model output is explained.
    """

    model: Any
    layer_name: str
    activation: str
    trunk: Callable[[Any], Any]
    head: Callable[[Any], Any] | None
    full: Callable[[Any], Any]
    num_classes: int
    feature_shape: tuple  # (h, w, channels) of the target layer
    head_type: str = "softmax"
    output_name: str | None = None
    output_index: int = 0
    num_outputs: int = 1  # how many units the model output itself has (1 for a binary head)
    heavy_head: bool = False  # big Dense layers after the cut: one head forward + N backward is cheaper
    #: the head again, with an input gradient exact only in its per-channel sums over positions
    #: (all Grad-CAM needs) and much cheaper; None where the head has no such shortcut
    channel_head: Callable[[Any], Any] | None = None

    @property
    def cut(self) -> bool:
        return self.head is not None

    @property
    def score_description(self) -> str:
        return SCORE_DESCRIPTIONS[self.head_type]


def split_model(model: Any, layer_name: str = "auto", output: str | int | None = None) -> Split:
    """Cut ``model`` at ``layer_name`` (see :class:`Split`). Nothing is mutated.

    ``layer_name``: a top-level layer name; a '/'-separated path through nested
    models, using their names (``mobilenetv2_1.00_224/out_relu``); a bare name
    found exactly once anywhere in the nesting (a top-level name wins); or
    ``"auto"``: the last layer with a 4-D output larger than 1x1 on the way to
    the output (see :func:`auto_layer`). ``output``: which output of a
    multi-output model to explain, by its name (the dict key, or the name of the
    layer producing it) or its index; required when there are several.
    """
    from keras import ops

    graph = _flatten(model)
    if len(graph.input_keys) != 1:
        raise ModelError(
            f"model '{model.name}' has {len(graph.input_keys)} inputs; only single-input image models are supported"
        )
    index = _select_output(graph, output)
    out_key = graph.output_keys[index]
    out_tensor = graph.tensors[out_key]
    out_shape = tuple(out_tensor.shape)
    if len(out_shape) not in (1, 2) or (len(out_shape) == 2 and out_shape[-1] is None):
        raise OptionError(
            f"output '{graph.output_names[index]}' of model '{model.name}' has shape {out_shape}; Grad-CAM needs "
            "one score per class, (batch, classes): pick another output with --output"
        )
    units = 1 if len(out_shape) == 1 else int(out_shape[-1])

    if layer_name == "auto" and not any(s.path == "auto" for s in graph.steps):
        step, _ = _auto_step(graph, [out_key])
        path, target = step.path, step.outputs[0]
    else:
        path, target, _ = _resolve_target(graph, layer_name)
    target_tensor = graph.tensors[target]

    last = graph.producer.get(out_key)
    removed = _squashing_op(last.op) if last is not None else None
    if removed == "softmax":
        head_type, activation = "softmax", "softmax"
    elif removed == "sigmoid":
        head_type, activation = ("binary" if units == 1 else "multilabel"), "sigmoid"
    else:
        head_type, activation = "linear", "linear"
    num_classes = 2 if head_type == "binary" else units

    (inp,) = graph.input_keys
    order = {id(s): i for i, s in enumerate(graph.steps)}
    trunk_ids = graph.ancestors([target])
    out_ids = graph.ancestors([out_key])
    trunk_steps = [s for s in graph.steps if id(s) in trunk_ids]
    head_steps = [s for s in graph.steps if id(s) in out_ids and id(s) not in trunk_ids]
    full_steps = sorted([s for s in graph.steps if id(s) in trunk_ids | out_ids], key=lambda s: order[id(s)])

    def scores_of(z: Any) -> Any:
        z = ops.cast(z, "float32")
        if len(out_shape) == 1:
            z = ops.expand_dims(z, -1)
        if head_type == "binary":
            z = ops.concatenate([-z, z], axis=-1)
        return z

    def trunk(x: Any) -> Any:
        return _execute(trunk_steps, {inp: x})[target]

    def full(x: Any) -> tuple[Any, Any]:
        values = _execute(full_steps, {inp: x}, last=last)
        return values[target], scores_of(values[out_key])

    channel_means = _channel_mean_kernels(head_steps, target)
    # no transposed copy of a kernel the channel head replaces (VGG16's fc1: 400 MB); the
    # exact head keeps TensorFlow's own gradient there
    transposed = _transposed_kernels(head_steps, skip=channel_means)
    with_means = {**transposed, **channel_means}

    def head(a: Any) -> Any:
        return scores_of(_execute(head_steps, {target: a}, last=last, transposed=transposed)[out_key])

    def channel_head(a: Any) -> Any:
        return scores_of(_execute(head_steps, {target: a}, last=last, transposed=with_means)[out_key])

    head_ok = out_key in _computable(head_steps, {target})

    return Split(
        model=model,
        layer_name=path,
        activation=activation,
        trunk=trunk,
        head=head if head_ok else None,
        full=full,
        num_classes=num_classes,
        feature_shape=tuple(int(d) if d is not None else None for d in target_tensor.shape[1:]),
        head_type=head_type,
        output_name=graph.output_names[index],
        output_index=index,
        num_outputs=units,
        heavy_head=head_ok and any(_big_dense(step.op, HEAVY_KERNEL) for step in head_steps),
        channel_head=channel_head if head_ok and channel_means else None,
    )
