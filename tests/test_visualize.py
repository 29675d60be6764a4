"""kzoo.visualize on a small classifier trained on real digit scans (scikit-learn's digits)."""

import keras
import numpy as np
import pytest
from keras import layers

from kzoo import finetune as ft
from kzoo import visualize as vz

SIZE = 16


def digits(size=SIZE):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype("float32")[..., None] * (255.0 / 16.0)
    x = np.asarray(keras.ops.image.resize(x, (size, size)))
    return np.repeat(np.clip(x, 0, 255), 3, axis=-1), d.target.astype("int64")


@pytest.fixture(scope="module")
def trained():
    """(model, test images, test labels): ~90% accurate after a few seconds of training."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    backbone = keras.Model(inputs, x, name="digits_net")
    model = ft.build_classifier(backbone, 10, preprocessing="tf", dropout=0.0)
    images, labels = digits()
    order = np.random.default_rng(0).permutation(len(images))  # the file is sorted by writer
    images, labels = images[order], labels[order]
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=False)
    model.fit(images[:1400], labels[:1400], batch_size=64, epochs=12, verbose=0)
    accuracy = model.evaluate(images[1400:], labels[1400:], verbose=0)[1]
    assert accuracy > 0.85, accuracy
    return model, images[1400:], labels[1400:]


def predict(model, x):
    return np.asarray(model.predict(np.asarray(x)[None] if np.ndim(x) == 3 else x, verbose=0)).argmax(-1)


def test_adversarial_flips_prediction_to_target_within_epsilon(trained):
    model, images, labels = trained
    correct = np.flatnonzero(predict(model, images) == labels)[:6]
    epsilon = 48.0
    for i in correct:
        target = (labels[i] + 3) % 10
        adv = vz.adversarial(model, images[i], target, epsilon=epsilon, steps=20)
        assert predict(model, adv)[0] == target
        assert np.max(np.abs(adv - images[i])) <= epsilon + 1e-3
        assert adv.min() >= 0.0 and adv.max() <= 255.0
    batch = vz.adversarial(model, images[correct], 0, epsilon=epsilon, steps=20)
    assert batch.shape == images[correct].shape and np.all(predict(model, batch) == 0)


def test_small_epsilon_is_respected_even_when_the_attack_fails(trained):
    model, images, labels = trained
    adv = vz.adversarial(model, images[0], (labels[0] + 1) % 10, epsilon=1.0, steps=5)
    assert np.max(np.abs(adv - images[0])) <= 1.0 + 1e-4


def class_log_prob(model, x, c):
    return float(np.log(model.predict(x[None], verbose=0)[0, c]))


def test_class_image_raises_the_class_score(trained):
    model, _, _ = trained
    start = vz.class_image(model, 7, steps=0, seed=1)  # the starting noise
    image = vz.class_image(model, 7, steps=40, tv_weight=0.5, seed=1)
    assert class_log_prob(model, image, 7) > class_log_prob(model, start, 7) + 1.0
    assert predict(model, image)[0] == 7


def test_larger_tv_weight_gives_smoother_images(trained):
    model, _, _ = trained
    tv = [float(vz.total_variation(vz.class_image(model, 3, steps=40, tv_weight=w, seed=2))) for w in (0.0, 1.0, 10.0)]
    assert tv[0] > tv[1] > tv[2], tv


def test_total_variation_of_known_images():
    flat = np.full((4, 4, 3), 9.0, "float32")
    stripes = np.zeros((4, 4, 1), "float32")
    stripes[:, ::2] = 1.0  # every horizontal neighbour differs by 1, vertical ones by 0
    assert float(vz.total_variation(flat)) == 0.0
    assert float(vz.total_variation(stripes)) == pytest.approx(1.0)
    batch = vz.total_variation(np.stack([stripes, stripes * 2]))
    np.testing.assert_allclose(np.asarray(batch), [1.0, 2.0])


def test_feature_maps_grid_png(trained, tmp_path):
    model, images, _ = trained
    path = tmp_path / "maps.png"
    grid = vz.feature_maps(model, images[0], ["conv1", "conv2"], path=path, max_channels=8, columns=4, tile=20)
    # two bands of two rows of four 20-px tiles, 2-px padding, a 4-px separator
    band = 2 * (20 + 2) + 2
    assert grid.shape == (2 * band + 4, 4 * (20 + 2) + 2) and grid.dtype == np.uint8
    loaded = np.asarray(keras.utils.load_img(path, color_mode="grayscale"))
    np.testing.assert_array_equal(loaded, grid)
    assert grid.std() > 10  # not a blank picture
