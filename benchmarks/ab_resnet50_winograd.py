"""A/B of ResNet50 inference: keras.applications vs optimize_for_inference with and without Winograd.

Single-step alternation (keras, folded only, Winograd planned for the batch, Winograd planned for batch 1),
process CPU time per step, median over rounds, one TF thread. It complements `kzoo bench`, which times
blocks of >= --min-time seconds per candidate. With malloc as TensorFlow's CPU allocator the two methods
disagreed by up to 10% on ResNet50: per-step page faults (system time) that depend on the process'
allocation history. Both now use TF's BFC pool by default, as `kzoo bench` does (BENCHMARKS.md).

    python benchmarks/ab_resnet50_winograd.py --batch 8 --rounds 8 [--uniform] [--allocator system]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--uniform", action="store_true",
                        help="inputs uniform in [0, 1) as in kzoo bench, instead of N(0, 1)")
    parser.add_argument("--allocator", choices=("bfc", "system"), default="bfc",
                        help="TensorFlow's CPU allocator (kzoo.bench.use_allocator)")
    args = parser.parse_args()

    from kzoo import bench

    bench.use_allocator(args.allocator)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    import kzoo
    from kzoo.winograd import WinogradConv2D

    base = keras.applications.ResNet50(weights=None)
    models = {
        "keras": base,
        "folded": kzoo.optimize_for_inference(base, winograd=False),
        f"winograd(batch_size={args.batch})": kzoo.optimize_for_inference(base, batch_size=args.batch),
        "winograd(batch 1 plan)": kzoo.optimize_for_inference(base),
    }
    print(f"TensorFlow CPU allocator: {bench.tf_cpu_allocator()}")
    for name, model in models.items():
        tiles = sorted(layer.tile for layer in model.layers if isinstance(layer, WinogradConv2D))
        print(f"{name}: Winograd tiles {tiles}")
    rng = np.random.default_rng(0)
    shape = (args.batch, 224, 224, 3)
    x = tf.constant((rng.uniform(0, 1, shape) if args.uniform else rng.normal(size=shape)).astype("float32"))
    steps = {name: tf.function(lambda t, m=model: m(t, training=False)) for name, model in models.items()}
    for step in steps.values():  # trace and warm up
        step(x).numpy()
        step(x).numpy()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.process_time()
            step(x).numpy()
            times[name].append(time.process_time() - start)
    reference = np.median(times["keras"])
    for name, values in times.items():
        median = np.median(values)
        print(f"batch {args.batch} {name}: {median * 1e3:.0f} CPU ms/batch, x keras {reference / median:.3f}")


if __name__ == "__main__":
    main()
