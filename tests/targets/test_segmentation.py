"""--target segmentation: class c's logits summed over a region (its predicted mask, or a given one).

A small encoder-decoder trained here on synthetic scenes (red and blue squares on grey noise)
must localise: each present class's map peaks inside that class's square; an absent class's
map is empty and its entry says so. On an untrained segmenter with a skip connection, the maps
equal an independent GradientTape reference of the same scalar."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradcam_cli.cam_targets import TargetCAM
from gradcam_cli.errors import InputError, OptionError
from gradcam_cli.io.target_files import Masks
from gradcam_cli.settings import MethodOptions

SIZE, SIDE = 32, 8
COLOURS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.1, 0.9)}  # class 1 red, class 2 blue; 0 is the background


def seg_scenes(n: int, seed: int):
    """(images float32 in [0, 1], label maps int (n, 32, 32), squares: per image {class: (y0, x0)})."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 0.08, (n, SIZE, SIZE, 3)).clip(0, 1).astype(np.float32)
    y = np.zeros((n, SIZE, SIZE), np.int32)
    squares = []
    for i in range(n):
        present = [c for c in (1, 2) if rng.random() < 0.7] or [int(rng.integers(1, 3))]
        placed: dict = {}
        for c in present:
            while True:
                y0, x0 = (int(v) for v in rng.integers(0, SIZE - SIDE + 1, 2))
                if all(abs(y0 - a) > SIDE or abs(x0 - b) > SIDE for a, b in placed.values()):
                    break
            x[i, y0:y0 + SIDE, x0:x0 + SIDE] = COLOURS[c]
            y[i, y0:y0 + SIDE, x0:x0 + SIDE] = c
            placed[c] = (y0, x0)
        squares.append(placed)
    return x, y, squares


def segmenter(filters: int = 12) -> keras.Model:
    """Encoder-decoder with a skip connection; a Softmax layer on 1x1-conv logits (3 classes)."""
    inp = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="enc")(inp)
    b = keras.layers.MaxPooling2D()(a)
    b = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="mid")(b)
    u = keras.layers.UpSampling2D()(b)
    d = keras.layers.Concatenate()([u, a])
    d = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="dec")(d)
    logits = keras.layers.Conv2D(3, 1, name="logits")(d)
    return keras.Model(inp, keras.layers.Softmax(name="probs")(logits), name="segmenter")


@pytest.fixture(scope="module")
def trained_segmenter():
    keras.utils.set_random_seed(3)
    model = segmenter()
    x, y, _ = seg_scenes(384, seed=1)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    return model


def as_uint8(x: np.ndarray) -> list:
    return [np.round(img * 255).astype(np.uint8) for img in x]


def test_each_present_class_map_peaks_in_its_region_and_an_absent_class_is_empty(trained_segmenter):
    cam = TargetCAM(model=trained_segmenter, target="segmentation", preprocessing="scale")
    assert cam.layer == "dec" and cam.tap.removed == "softmax"  # the last 4-D layer before the logits
    x, _y, squares = seg_scenes(40, seed=99)  # held out
    results = cam.explain(as_uint8(x), classes=["1", "2"])
    hits = total = absent = 0
    for result, placed in zip(results, squares):
        for n, c in enumerate((1, 2)):
            detail, cam_map = result.details[n], result.maps[n]
            if c in placed:
                total += 1
                py, px = np.unravel_index(np.argmax(cam_map), cam_map.shape)
                y0, x0 = placed[c]
                hits += int(y0 <= py < y0 + SIDE and x0 <= px < x0 + SIDE)
            elif not detail["present"]:
                absent += 1
                assert detail["pixel_share"] == 0.0 and "absent" in detail["empty"]
                assert not cam_map.any()
    print(f"segmentation: {hits}/{total} present-class maps peak in their square, {absent} absent maps empty")
    assert total >= 50 and hits / total >= 0.9, (hits, total)
    assert absent == sum(len({1, 2} - set(p)) for p in squares)  # the trained model predicts no absent class


def test_top_n_are_the_classes_covering_most_pixels(trained_segmenter):
    cam = TargetCAM(model=trained_segmenter, target="segmentation", preprocessing="scale")
    x, _, _ = seg_scenes(6, seed=7)
    images = as_uint8(x)
    predicted = np.argmax(trained_segmenter.predict(cam.prepare(images), verbose=0), axis=-1)
    for result, labels in zip(cam.explain(images, top=3), predicted):
        counts = np.bincount(labels.ravel(), minlength=3)
        assert [p.class_index for p in result.predictions] == list(np.argsort(-counts, kind="stable"))
        assert [d["pixel_share"] for d in result.details] == pytest.approx(sorted(counts / counts.sum())[::-1],
                                                                            abs=1e-6)
        for p, region in zip(result.predictions, result.regions):  # the outline drawn is the predicted mask
            np.testing.assert_array_equal(region, labels == p.class_index)


def tape_reference(model, x, c, region, layer="dec", method="gradcam", centred=False):
    """Grad-CAM of sum(logits[..., c] * region) at ``layer`` by a plain tape (one image); ``centred``:
    the weights times the activations less each channel's mean over positions (``--centre-activations on``)."""
    inner = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer("logits").output])
    with tf.GradientTape() as tape:
        acts, logits = inner(x[None])
        score = tf.reduce_sum(logits[0, ..., c] * region)
    grads = tape.gradient(score, acts)
    summed = acts - tf.reduce_mean(acts, axis=(1, 2), keepdims=True) if centred else acts
    if method == "gradcam":
        cam = tf.reduce_sum(summed * tf.reduce_mean(grads, axis=(1, 2), keepdims=True), -1)[0].numpy()
    else:  # layercam
        cam = tf.reduce_sum(tf.nn.relu(grads) * summed, -1)[0].numpy()
    cam = np.maximum(cam, 0)
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.mark.parametrize("layer", ["dec", "mid"])
def test_maps_equal_a_tape_reference_of_the_same_scalar(layer, tmp_path):
    keras.utils.set_random_seed(5)
    model = segmenter(6)
    cam = TargetCAM(model=model, target="segmentation", preprocessing="none", layer=layer)
    images = [np.random.default_rng(i).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.uint8) for i in range(3)]
    x = cam.prepare(images)
    labels = np.argmax(model.predict(x, verbose=0), axis=-1)
    for centre in ("auto", "on"):  # a CNN: auto is off
        results = cam.explain(images, top=2, method=["gradcam", "layercam"], options=MethodOptions(centre_activations=centre))
        for b, result in enumerate(results):
            for n, p in enumerate(result.predictions):
                region = (labels[b] == p.class_index).astype(np.float32)
                for method in ("gradcam", "layercam"):
                    expected = tape_reference(model, x[b], p.class_index, region, layer, method, centre == "on")
                    np.testing.assert_allclose(result.maps_by_method[method][n], expected, atol=1e-5)
    # a given mask: every explained class summed over it
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:20, 10:30] = True
    cam = TargetCAM(model=model, target="segmentation", preprocessing="none", layer=layer, masks=True)
    [result] = cam.explain(images[:1], classes=["2"], masks=[mask])
    np.testing.assert_allclose(result.maps[0], tape_reference(model, x[0], 2, mask.astype(np.float32), layer),
                               atol=1e-5)
    inside = labels[0][mask]
    assert result.details[0]["pixel_share"] == pytest.approx(float((inside == 2).mean()), abs=1e-6)
    np.testing.assert_array_equal(result.regions[0], mask)


def test_bad_input_is_one_line(tmp_path):
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    classifier = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="scores")(
        keras.layers.GlobalAveragePooling2D()(h)))
    with pytest.raises(OptionError) as exc:
        TargetCAM(model=classifier, target="segmentation")
    assert str(exc.value) == ("--target segmentation needs a model output of shape (batch, height, width, classes); "
                              f"output 'scores' of model '{classifier.name}' has shape (batch, 3): a classifier's, "
                              "use --target class")
    with pytest.raises(OptionError, match=r"^unknown target 'segmentaton' \(did you mean 'segmentation'\?\); "
                                          r"choose one of: class, segmentation, similarity, box$"):
        TargetCAM(model=classifier, target="segmentaton")
    from PIL import Image

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputError) as exc:
        Masks(tmp_path / "m.png").check_size("a.jpg", (32, 32))
    assert str(exc.value) == (f"mask {tmp_path / 'm.png'} is 12x10 but image a.jpg is 32x32; "
                              "give a mask of the image's own size")
    with pytest.raises(InputError, match="^mask .*nope.png does not exist; pass --mask with a mask image or a CSV"):
        Masks(tmp_path / "nope.png")
    cam = TargetCAM(model=segmenter(4), target="segmentation", preprocessing="none")
    with pytest.raises(OptionError, match=r"^method 'scorecam' does not apply to --target segmentation: it scores "
                                          r"or backpropagates class scores itself, not this target's scalar; use one "
                                          r"of: gradcam, gradcam\+\+, xgradcam, layercam, hirescam, eigencam, random, "
                                          r"centre$"):
        cam.explain([np.zeros((SIZE, SIZE, 3), np.uint8)], method="scorecam")
