"""Real data, real gain: transfer learning on scikit-learn's handwritten digits (real 8x8 scans).

1. Pretrain a small MobileNetV2 (alpha 0.35, 32x32 input) on digits 0-4.
2. Save its backbone (no head) as a legacy h5 weight file.
3. New task, digits 5-9, with only a few labelled images per class:
   - fine-tuned: ``build_classifier(..., weights=<backbone file>)`` + ``fit_two_phase``;
   - from scratch: the same model with random weights and the same number of epochs and images.
4. Evaluate both on the held-out 5-9 images.

Run ``python examples/digits_transfer.py --seeds 0 1 2 3 4 --figure docs/figures/digits_transfer.png``
to reproduce the table and figure in ``docs/transfer_learning.md``. ``tests/test_transfer_digits.py``
runs one seed and asserts the margin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

SIZE = 32
SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)


def load_digits_rgb(size=SIZE):
    """All 1797 digits as (N, size, size, 3) float32 in [0, 255], bilinearly upsampled from 8x8."""
    from keras import ops
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
    images = ops.convert_to_numpy(ops.image.resize(images, (size, size), interpolation="bilinear"))
    images = np.repeat(np.clip(images, 0, 255), 3, axis=-1)
    return images, digits.target.astype("int64")


def split(images, labels, shots, seed):
    """Source set (0-4, all), target train (``shots`` per class of 5-9), target test (the rest)."""
    rng = np.random.default_rng(seed)
    source = np.isin(labels, SOURCE_CLASSES)
    train_idx, test_idx = [], []
    for new_label, digit in enumerate(TARGET_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train_idx.extend(idx[:shots])
        test_idx.extend(idx[shots:])
    remap = {d: i for i, d in enumerate(TARGET_CLASSES)}
    target = lambda idx: (images[idx], np.array([remap[int(v)] for v in labels[idx]]))  # noqa: E731
    return (images[source], labels[source]), target(np.array(train_idx)), target(np.array(test_idx))


def small_cnn(input_shape=(SIZE, SIZE, 3)):
    """A 6-conv VGG-like backbone: fast enough for the test suite (the docs also run MobileNetV2)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for stage, filters in enumerate((16, 32, 64), start=1):
        for i in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{stage}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"block{stage}_bn{i}")(x)
            x = layers.ReLU(name=f"block{stage}_relu{i}")(x)
        x = layers.MaxPooling2D(name=f"block{stage}_pool")(x)
    return keras.Model(inputs, x, name="digits_cnn")


def _classifier(backbone, weights, num_classes=5):
    import keras

    from kzoo import finetune

    if backbone == "small_cnn":
        model = finetune.build_classifier(small_cnn(), num_classes, weights=weights, preprocessing="tf")
    else:
        model = finetune.build_classifier(backbone, num_classes, weights=weights, input_shape=(SIZE, SIZE, 3),
                                          alpha=0.35)
    # A few hundred steps on ~900 images: with Keras' default BN momentum (0.99; 0.999 in MobileNetV2)
    # the moving statistics would still be near their initial values, and every inference-mode
    # evaluation (and the frozen BN of fine-tuning) would be at chance. Same setting for every model.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def _compile(model, lr):
    import keras

    # No XLA: compiling a deep training step takes longer than training on this data.
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)


def pretrain(backbone, source, epochs, seed, path, lr=2e-3):
    """Train on digits 0-4 from scratch, then save the backbone without its head to ``path``."""
    import keras

    from kzoo import finetune
    from kzoo.formats.keras_h5 import save_weights

    keras.utils.set_random_seed(seed)
    model = _classifier(backbone, None)
    _compile(model, lr)
    history = model.fit(*source, batch_size=32, epochs=epochs, verbose=0)
    save_weights(finetune.feature_extractor(model), path)  # up to the pooled features: no head in the file
    return float(history.history["accuracy"][-1])


def finetuned(backbone, train, test, backbone_file, head_epochs, finetune_epochs, seed, lr=1e-3):
    """``build_classifier`` on the pretrained backbone file, then ``fit_two_phase``."""
    import keras

    from kzoo import finetune

    keras.utils.set_random_seed(seed)
    model = _classifier(backbone, backbone_file)
    history = finetune.fit_two_phase(model, train, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
                                     lr=lr, finetune_lr_factor=0.3, batch_size=16, jit_compile=False, verbose=0)
    return float(model.evaluate(*test, verbose=0, batch_size=256)[1]), history.history


def from_scratch(backbone, train, test, epochs, seed, lr=1e-3):
    """Same architecture, random weights, every layer trains, same epochs and images."""
    import keras

    keras.utils.set_random_seed(seed)
    model = _classifier(backbone, None)
    _compile(model, lr)
    history = model.fit(*train, batch_size=16, epochs=epochs, verbose=0)
    return float(model.evaluate(*test, verbose=0, batch_size=256)[1]), history.history


def run(seed=0, backbone="small_cnn", shots=10, pretrain_epochs=8, head_epochs=4, finetune_epochs=8, workdir=None):
    """One seed of the whole experiment; returns the accuracies and the training curves."""
    images, labels = load_digits_rgb()
    source, train, test = split(images, labels, shots, seed)
    workdir = workdir or tempfile.mkdtemp(prefix="kzoo-digits-")
    backbone_file = os.path.join(workdir, f"digits04_{backbone}_seed{seed}.h5")
    t0 = time.perf_counter()
    source_acc = pretrain(backbone, source, pretrain_epochs, seed, backbone_file)
    ft_acc, ft_hist = finetuned(backbone, train, test, backbone_file, head_epochs, finetune_epochs, seed)
    sc_acc, sc_hist = from_scratch(backbone, train, test, head_epochs + finetune_epochs, seed)
    return {
        "seed": seed, "backbone": backbone, "shots_per_class": shots, "target_train": len(train[0]),
        "target_test": len(test[0]), "source_train_accuracy": source_acc, "finetuned_accuracy": ft_acc,
        "scratch_accuracy": sc_acc, "gain": ft_acc - sc_acc, "seconds": time.perf_counter() - t0,
        "finetuned_curve": [float(v) for v in ft_hist["accuracy"]],
        "scratch_curve": [float(v) for v in sc_hist["accuracy"]],
    }


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    seeds = [r["seed"] for r in results]
    width = 0.38
    pos = np.arange(len(seeds))
    ax1.bar(pos - width / 2, [r["finetuned_accuracy"] for r in results], width, label="fine-tuned from 0-4")
    ax1.bar(pos + width / 2, [r["scratch_accuracy"] for r in results], width, label="from scratch")
    ax1.set_xticks(pos, [f"seed {s}" for s in seeds])
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("test accuracy on digits 5-9")
    ax1.set_title(f"{results[0]['backbone']}, {results[0]['shots_per_class']} labelled images per class")
    ax1.legend(loc="lower right")
    for r in results:
        ax2.plot(range(1, len(r["finetuned_curve"]) + 1), r["finetuned_curve"], color="C0", alpha=0.7)
        ax2.plot(range(1, len(r["scratch_curve"]) + 1), r["scratch_curve"], color="C1", alpha=0.7)
    ax2.axvline(len(results[0]["finetuned_curve"]) - len(results[0]["scratch_curve"]) + 0.5, color="0.8")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training accuracy")
    ax2.set_title("training curves (blue: fine-tuned, orange: scratch)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--backbone", default="small_cnn", help="small_cnn, or a model name (mobilenetv2)")
    parser.add_argument("--shots", type=int, default=10, help="labelled images per target class")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--head-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--figure", help="write a PNG figure here")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = []
    for seed in args.seeds:
        r = run(seed, args.backbone, args.shots, args.pretrain_epochs, args.head_epochs, args.finetune_epochs)
        results.append(r)
        print(f"seed {seed}: fine-tuned {r['finetuned_accuracy']:.3f}  scratch {r['scratch_accuracy']:.3f}  "
              f"gain {r['gain']:+.3f}  (source train acc {r['source_train_accuracy']:.3f}, {r['seconds']:.0f} s)",
              flush=True)
    gains = [r["gain"] for r in results]
    print(f"gain: mean {np.mean(gains):+.3f}, min {np.min(gains):+.3f} over {len(gains)} seeds")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.figure:
        plot(results, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
