"""From a folder of images to a fine-tuned, evaluated and saved classifier on an ImageNet backbone.

    python examples/transfer_learning.py --data path/to/images --backbone mobilenetv2 --weights imagenet

``--data`` holds one sub-folder per class (``cats/``, ``dogs/`` ...), as for
``keras.utils.image_dataset_from_directory``. Without ``--data`` a small synthetic folder (coloured
shapes) is written first, so the whole flow runs anywhere; ``--weights none`` skips the pretrained
weights (no download), e.g.:

    python examples/transfer_learning.py --weights none --head-epochs 1 --finetune-epochs 1

Steps: build the classifier (the backbone's preprocessing is inside it, so it takes raw pixels) ->
datasets at the model's input size with augmentation -> two-phase training (head, then the top of
the backbone at a lower rate, BatchNormalization kept frozen) -> per-class evaluation -> save as
``.keras`` and check that the reloaded model predicts the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np


def make_synthetic_folder(root, per_class=24, size=80, seed=0):
    """Three classes of noisy coloured shapes (discs, squares, stripes) as PNG files."""
    import keras

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("discs", "squares", "stripes"):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(per_class):
            img = rng.uniform(0, 80, (size, size, 3))
            colour = rng.uniform(120, 255, 3)
            cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(size // 8, size // 4))]
            if cls == "discs":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            elif cls == "squares":
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
            else:
                mask = ((xx + int(rng.integers(0, 8))) // 6) % 2 == 0
            img[mask] = colour
            keras.utils.save_img(os.path.join(root, cls, f"{cls}_{i:03d}.png"), img.astype("uint8"), scale=False)
    return root


def evaluate(model, dataset, class_names):
    """Overall accuracy and a confusion matrix (rows: true class, columns: predicted)."""
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=int)
    for x, y in dataset:
        p = np.asarray(model.predict_on_batch(x))
        pred = (p[:, 0] > 0.5).astype(int) if p.shape[-1] == 1 else p.argmax(-1)
        for t, q in zip(np.asarray(y).reshape(-1).astype(int), pred):
            confusion[t, q] += 1
    return float(np.trace(confusion) / max(confusion.sum(), 1)), confusion


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fine-tune an ImageNet backbone on a folder of images.")
    parser.add_argument("--data", help="folder with one sub-folder per class (default: a synthetic one)")
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--alpha", type=float, default=None, help="width multiplier, for MobileNets")
    parser.add_argument("--weights", default="imagenet", help="registry tag, a weight file, or 'none'")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--unfreeze", default=None,
                        help="first layer/stage to unfreeze in phase 2 (e.g. block_13), or a fraction (0.7)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layer-decay", type=float, default=None)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the training step (good on GPU)")
    parser.add_argument("--out", default="finetuned.keras", help="where to save the model")
    args = parser.parse_args(argv)

    import keras

    from kzoo import finetune

    data = args.data or make_synthetic_folder(tempfile.mkdtemp(prefix="kzoo-images-"))
    classes = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))
    weights = None if args.weights.lower() == "none" else args.weights
    extra = {"alpha": args.alpha} if args.alpha else {}
    keras.utils.set_random_seed(0)
    model = finetune.build_classifier(args.backbone, len(classes), weights=weights,
                                      input_shape=(args.image_size, args.image_size, 3), **extra)
    if model.kzoo_load_report is not None:
        print(model.kzoo_load_report)
    train, val = finetune.image_dataset(data, model, batch_size=args.batch_size, validation_split=0.25,
                                        subset="both", augment=True)
    print(f"{len(classes)} classes {train.class_names}, backbone {args.backbone} ({weights}), "
          f"{model.count_params():,} parameters")

    unfreeze = float(args.unfreeze) if args.unfreeze and args.unfreeze.replace(".", "", 1).isdigit() else args.unfreeze
    history = finetune.fit_two_phase(model, train, val, head_epochs=args.head_epochs,
                                     finetune_epochs=args.finetune_epochs, unfreeze=unfreeze, lr=args.lr,
                                     layer_decay=args.layer_decay, jit_compile=bool(args.jit), verbose=2)
    print("phase 1:", history.head_summary)
    print("phase 2:", history.finetune_summary)

    accuracy, confusion = evaluate(model, val, train.class_names)
    print(f"validation accuracy {accuracy:.3f}")
    print("confusion (rows true, columns predicted):")
    for name, row in zip(train.class_names, confusion):
        print(f"  {name:>12} {row.tolist()}")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.save(args.out)
    with open(os.path.splitext(args.out)[0] + ".classes.json", "w") as f:
        json.dump(train.class_names, f)
    reloaded = keras.saving.load_model(args.out)
    x, _ = next(iter(val))
    same = np.allclose(np.asarray(reloaded.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)), atol=1e-5)
    print(f"saved {args.out}; the reloaded model takes raw pixels and predicts the same: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
