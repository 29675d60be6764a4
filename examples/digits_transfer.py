"""Real data, real gain: transfer learning on scikit-learn's handwritten digits (real 8x8 scans).

1. Pretrain a small backbone on digits 0-4: a 6-conv CNN (fast, the default) or MobileNetV2
   (alpha 0.35, 32x32 input, ``--backbone mobilenetv2 --size 32``).
2. Save its backbone (no head) as a legacy h5 weight file.
3. New task, digits 5-9, with only a few labelled images per class:
   - fine-tuned: ``build_classifier(..., weights=<backbone file>)`` + ``fit_two_phase``;
   - from scratch: the same model with random weights and the same number of epochs and images.
4. Evaluate both on the held-out 5-9 images.

The commands in ``docs/transfer_learning.md`` reproduce its table and figure;
``tests/test_transfer_digits.py`` runs a shorter version and asserts the margin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)


def load_digits_rgb(size):
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


def small_cnn(input_shape):
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


def _classifier(backbone, weights, size, num_classes=5):
    import keras

    from kzoo import finetune

    if backbone == "small_cnn":
        model = finetune.build_classifier(small_cnn((size, size, 3)), num_classes, weights=weights,
                                          preprocessing="tf")
    else:
        model = finetune.build_classifier(backbone, num_classes, weights=weights, input_shape=(size, size, 3),
                                          alpha=0.35)
    # A few hundred steps on ~900 images: with Keras' default BN momentum (0.99; 0.999 in MobileNetV2)
    # the moving statistics would still be near their initial values, and every inference-mode
    # evaluation (and the frozen BN of fine-tuning) would be at chance. Same setting for every model.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def _test_curve(test):
    """A callback recording test accuracy after every epoch: accuracy as a function of the budget."""
    import keras

    class TestAccuracy(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.values = []

        def on_epoch_end(self, epoch, logs=None):
            p = np.asarray(self.model.predict(test[0], verbose=0, batch_size=512))
            self.values.append(float(np.mean(p.argmax(-1) == test[1])))

    return TestAccuracy()


def _compile(model, lr):
    import keras

    # No XLA: compiling a deep training step takes longer than training on this data.
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)


def pretrain(backbone, source, size, epochs, seed, path, lr=3e-3):
    """Train on digits 0-4 from scratch, then save the backbone without its head to ``path``."""
    import keras

    from kzoo import finetune
    from kzoo.formats.keras_h5 import save_weights

    keras.utils.set_random_seed(seed)
    model = _classifier(backbone, None, size)
    _compile(model, lr)
    history = model.fit(*source, batch_size=64, epochs=epochs, verbose=0)
    save_weights(finetune.feature_extractor(model), path)  # up to the pooled features: no head in the file
    return float(history.history["accuracy"][-1])


def finetuned(backbone, train, test, size, backbone_file, head_epochs, finetune_epochs, seed, batch_size,
              recipe="full", lr=3e-3, keep_bn_frozen=False):
    """``build_classifier`` on the pretrained backbone file, then ``fit_two_phase``.

    ``recipe="full"``: every layer trains from the first step with the scratch model's optimizer and
    rate, so the only difference from the baseline is the initialisation. ``"two_phase"``: head
    first (rate 1e-2), then everything at a tenth of it.
    """
    import keras

    from kzoo import finetune

    keras.utils.set_random_seed(seed)
    model = _classifier(backbone, backbone_file, size)
    curve = _test_curve(test)
    if recipe == "full":
        head_epochs, finetune_epochs, factor = 0, head_epochs + finetune_epochs, 1.0
    else:
        lr, factor = 1e-2, 0.1
    finetune.fit_two_phase(model, train, head_epochs=head_epochs, finetune_epochs=finetune_epochs, lr=lr,
                           finetune_lr_factor=factor, keep_bn_frozen=keep_bn_frozen, batch_size=batch_size,
                           jit_compile=False, callbacks=[curve], verbose=0)
    return curve.values


def from_scratch(backbone, train, test, size, epochs, seed, batch_size, lr=3e-3):
    """Same architecture, random weights, every layer trains, same epochs, batches and images."""
    import keras

    keras.utils.set_random_seed(seed)
    model = _classifier(backbone, None, size)
    _compile(model, lr)
    curve = _test_curve(test)
    model.fit(*train, batch_size=batch_size, epochs=epochs, callbacks=[curve], verbose=0)
    return curve.values


def run(seeds=(0,), backbone="small_cnn", size=16, shots=5, pretrain_epochs=4, head_epochs=10,
        finetune_epochs=10, batch_size=8, keep_bn_frozen=False, scratch_lr=3e-3, recipe="full", workdir=None,
        log=None):
    """Pretrain once on 0-4, then for each seed a new 5-9 sample: fine-tuned vs from scratch.

    The budget is the same for both: ``head_epochs + finetune_epochs`` epochs over the same
    ``5 * shots`` images in batches of ``batch_size``.
    """
    images, labels = load_digits_rgb(size)
    workdir = workdir or tempfile.mkdtemp(prefix="kzoo-digits-")
    backbone_file = os.path.join(workdir, f"digits04_{backbone}_{size}px.h5")
    t0 = time.perf_counter()
    source, _, _ = split(images, labels, shots, 0)
    source_acc = pretrain(backbone, source, size, pretrain_epochs, 0, backbone_file)
    results = []
    for seed in seeds:
        t1 = time.perf_counter()
        _, train, test = split(images, labels, shots, seed)
        ft_curve = finetuned(backbone, train, test, size, backbone_file, head_epochs, finetune_epochs, seed,
                             batch_size, recipe=recipe, lr=scratch_lr, keep_bn_frozen=keep_bn_frozen)
        sc_curve = from_scratch(backbone, train, test, size, head_epochs + finetune_epochs, seed, batch_size,
                                lr=scratch_lr)
        ft_acc, sc_acc = ft_curve[-1], sc_curve[-1]
        results.append({
            "seed": seed, "backbone": backbone, "size": size, "shots_per_class": shots,
            "recipe": recipe, "head_epochs": head_epochs if recipe != "full" else 0,
            "finetune_epochs": finetune_epochs if recipe != "full" else head_epochs + finetune_epochs,
            "batch_size": batch_size,
            "target_train": len(train[0]), "target_test": len(test[0]), "source_train_accuracy": source_acc,
            "finetuned_accuracy": ft_acc, "scratch_accuracy": sc_acc, "gain": ft_acc - sc_acc,
            "seconds": time.perf_counter() - t1, "pretrain_seconds": t1 - t0 if seed == seeds[0] else 0.0,
            "finetuned_curve": ft_curve, "scratch_curve": sc_curve,  # test accuracy after each epoch
        })
        if log:
            log(results[-1])
    return results


def plot(results, path):
    """Left: test accuracy against the training budget (epochs), mean and range over seeds.
    Right: final accuracy per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    first = results[0]
    for key, label, colour in (("finetuned_curve", "fine-tuned from digits 0-4", "C0"),
                               ("scratch_curve", "from scratch", "C1")):
        curves = np.array([r[key] for r in results])
        epochs = np.arange(1, curves.shape[1] + 1)
        ax1.plot(epochs, curves.mean(0), color=colour, label=label)
        ax1.fill_between(epochs, curves.min(0), curves.max(0), color=colour, alpha=0.2)
    head = first.get("head_epochs", 0)
    if head:
        ax1.axvline(head + 0.5, color="0.7", linestyle="--")
        ax1.text(head + 0.7, 0.05, "unfreeze", color="0.4")
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("training budget (epochs over the same images)")
    ax1.set_ylabel("test accuracy, digits 5-9")
    ax1.set_title(f"{first['backbone']} {first['size']}px, {first['shots_per_class']} images per class")
    ax1.legend(loc="lower right")
    seeds = [r["seed"] for r in results]
    pos = np.arange(len(seeds))
    ax2.bar(pos - 0.2, [r["finetuned_accuracy"] for r in results], 0.4, color="C0", label="fine-tuned")
    ax2.bar(pos + 0.2, [r["scratch_accuracy"] for r in results], 0.4, color="C1", label="from scratch")
    ax2.set_xticks(pos, [f"seed {s}" for s in seeds])
    ax2.set_ylim(0, 1)
    ax2.set_title(f"after {len(first['finetuned_curve'])} epochs")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--backbone", default="small_cnn", help="small_cnn, or a model name (mobilenetv2)")
    parser.add_argument("--size", type=int, default=16, help="image side after upsampling (32 for mobilenetv2)")
    parser.add_argument("--shots", type=int, default=5, help="labelled images per target class")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--keep-bn-frozen", action="store_true")
    parser.add_argument("--scratch-lr", type=float, default=3e-3, help="also the full fine-tuning rate")
    parser.add_argument("--recipe", choices=("full", "two_phase"), default="full")
    parser.add_argument("--figure", help="write a PNG figure here")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    def log(r):
        print(f"seed {r['seed']}: fine-tuned {r['finetuned_accuracy']:.3f}  scratch {r['scratch_accuracy']:.3f}  "
              f"gain {r['gain']:+.3f}  (source train acc {r['source_train_accuracy']:.3f}, {r['seconds']:.0f} s)",
              flush=True)

    results = run(args.seeds, args.backbone, args.size, args.shots, args.pretrain_epochs, args.head_epochs,
                  args.finetune_epochs, args.batch_size, args.keep_bn_frozen, args.scratch_lr, args.recipe, log=log)
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
