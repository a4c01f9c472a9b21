"""--target similarity: the cosine similarity of the image's embedding with a reference's.

An embedding model trained here (a classifier of four coloured objects on varied noise; its
embedding is the default, the features global-max-pooled before its head: an average over
16 x 16 cells would be 94% background) must point at the shared
object: in a scene of two objects, the map for a reference showing one of them peaks on that
one. Maps equal an independent GradientTape reference of the same scalar, for a reference
image and for a saved ``.npy`` embedding."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from gradcam_cli.cam_targets import TargetCAM
from gradcam_cli.errors import InputError, OptionError

SIZE, SIDE = 32, 8
OBJECTS = np.array([[0.9, 0.1, 0.1], [0.1, 0.85, 0.1], [0.1, 0.1, 0.9], [0.9, 0.85, 0.1]], np.float32)


def background(rng) -> np.ndarray:
    """Noise around a random grey level and tint: each image's background differs."""
    base = rng.uniform(0.3, 0.6) + rng.uniform(-0.05, 0.05, 3)
    return (base + rng.normal(0, 0.08, (SIZE, SIZE, 3))).clip(0, 1).astype(np.float32)


def place(rng, image, k, taken=()):
    while True:
        y0, x0 = (int(v) for v in rng.integers(0, SIZE - SIDE + 1, 2))
        if all(abs(y0 - a) > SIDE or abs(x0 - b) > SIDE for a, b in taken):
            break
    image[y0:y0 + SIDE, x0:x0 + SIDE] = OBJECTS[k]
    return y0, x0


def singles(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x, y = np.empty((n, SIZE, SIZE, 3), np.float32), rng.integers(0, len(OBJECTS), n)
    for i in range(n):
        x[i] = background(rng)
        place(rng, x[i], y[i])
    return x, y


def embedder() -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(inp)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="feat")(h)
    h = keras.layers.GlobalMaxPooling2D(name="pool")(h)
    return keras.Model(inp, keras.layers.Dense(len(OBJECTS), activation="softmax", name="head")(h), name="embedder")


@pytest.fixture(scope="module")
def trained_embedder():
    keras.utils.set_random_seed(11)
    model = embedder()
    x, y = singles(512, seed=2)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    return model


def png(path, image: np.ndarray):
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return path


def test_the_map_peaks_on_the_object_shared_with_the_reference(trained_embedder, tmp_path):
    rng = np.random.default_rng(42)
    refs = tmp_path / "refs"
    refs.mkdir()
    for k in range(len(OBJECTS)):  # one reference per object, each on its own background
        image = background(rng)
        place(rng, image, k)
        png(refs / f"object{k}.png", image)
    scenes, placed = [], []
    for _ in range(30):  # two different objects per scene, on another background
        image = background(rng)
        a, b = (int(v) for v in rng.choice(len(OBJECTS), 2, replace=False))
        where_a = place(rng, image, a)
        placed.append({a: where_a, b: place(rng, image, b, [where_a])})
        scenes.append(np.round(image * 255).astype(np.uint8))
    cam = TargetCAM(model=trained_embedder, target="similarity", reference=str(refs), preprocessing="scale")
    assert cam.tap.out_name == "pool" and cam.layer == "feat"  # the pooled features before the head
    hits = total = 0
    for result, objects in zip(cam.explain(scenes), placed):
        assert [p.label for p in result.predictions] == [f"object{k}" for k in range(len(OBJECTS))]
        for k, (y0, x0) in objects.items():  # the reference showing object k
            total += 1
            py, px = np.unravel_index(np.argmax(result.maps[k]), result.maps[k].shape)
            cy, cx = 2 * py + 1, 2 * px + 1  # the cell's centre in input pixels (16 x 16 map, stride 2)
            hits += int(y0 <= cy < y0 + SIDE and x0 <= cx < x0 + SIDE)
            assert result.details[k]["similarity"] == pytest.approx(result.predictions[k].probability)
    print(f"similarity: {hits}/{total} maps peak on the object shared with the reference")
    assert total == 60 and hits / total >= 0.85, hits


def tape_reference(model, x, reference_unit, layer="feat", embedding="pool"):
    inner = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer(embedding).output])
    with tf.GradientTape() as tape:
        acts, emb = inner(x[None])
        sim = tf.reduce_sum(tf.math.l2_normalize(emb, axis=-1) * reference_unit)
    grads = tape.gradient(sim, acts)
    cam = np.maximum(tf.reduce_sum(acts * tf.reduce_mean(grads, axis=(1, 2), keepdims=True), -1)[0].numpy(), 0)
    return cam / cam.max() if cam.max() > 0 else cam, float(sim)


def test_maps_equal_a_tape_reference_for_an_image_and_a_saved_embedding(tmp_path):
    keras.utils.set_random_seed(6)
    model = embedder()
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.uint8) for _ in range(3)]
    png(tmp_path / "a.png", images[0] / 255.0)
    saved = rng.normal(size=16).astype(np.float32)
    np.save(tmp_path / "b.npy", saved)
    for reference in ("a.png", "b.npy"):
        cam = TargetCAM(model=model, target="similarity", reference=str(tmp_path / reference), preprocessing="none")
        x = cam.prepare(images)
        if reference == "a.png":
            emb = keras.Model(model.inputs, model.get_layer("pool").output)(x[:1]).numpy()[0]
        else:
            emb = saved
        unit = emb / np.linalg.norm(emb)
        for b, result in enumerate(cam.explain(images)):
            expected, sim = tape_reference(model, x[b], unit)
            np.testing.assert_allclose(result.maps[0], expected, atol=1e-5)
            assert result.predictions[0].probability == pytest.approx(sim, abs=1e-5)
    # a named layer as the embedding: the feature map, spatially averaged
    cam = TargetCAM(model=model, target="similarity", reference=str(tmp_path / "a.png"), preprocessing="none",
                    embedding="feat", layer="feat")
    assert cam.tap.out_name == "feat"
    [result] = cam.explain(images[:1])
    assert result.predictions[0].probability == pytest.approx(1.0, abs=1e-5)  # the image is its own reference


def test_bad_references_are_one_line(tmp_path):
    model = embedder()
    with pytest.raises(InputError) as exc:
        TargetCAM(model=model, target="similarity", reference=str(tmp_path / "missing.png"))
    assert str(exc.value) == (f"reference {tmp_path / 'missing.png'} does not exist; pass --reference with an "
                              "image, a .npy embedding or a folder of them")
    with pytest.raises(OptionError, match=r"^--target similarity needs --reference IMAGE_OR_NPY"):
        TargetCAM(model=model, target="similarity")
    np.save(tmp_path / "short.npy", np.zeros(5, np.float32))
    with pytest.raises(InputError) as exc:
        TargetCAM(model=model, target="similarity", reference=str(tmp_path / "short.npy"), preprocessing="none")
    assert str(exc.value) == (f"reference {tmp_path / 'short.npy'} holds 5 values but the model's embedding has 16; "
                              "save it from the same model and --embedding")
    with pytest.raises(OptionError, match=r"^model 'embedder' has no output or layer 'pol' \(did you mean 'pool'"):
        TargetCAM(model=model, target="similarity", reference=str(tmp_path / "short.npy"), embedding="pol")
