"""Parity: does the exported artifact, in its own runtime, compute what the Keras model computes?

Two kinds of input, both at the model's input size and through the model's own preprocessing:

* **seeded random images** (:func:`random_images`): each one uniform noise over its own colour cast, contrast
  and smooth gradient, so the images differ in what a pooled feature sees, not only in pixel noise;
* **a picture** (:func:`scene_image`, or the user's photo): large smooth regions, hard edges and texture, the
  statistics of a photograph, which noise lacks. kzoo draws its scene itself (a sky, a sun, hills, a house,
  grass), so no image file with a licence to check ships with it.

Figures (:class:`Figures`): ``max_rel_diff`` is ``max |artifact - keras| / max |keras|`` over every output
value, relative to the output's own scale (so a softmax tail near 0 cannot inflate it); ``top5_agreement`` is
the share of rows whose five best classes are the same set in both; ``spread`` is the same relative measure
*between the Keras outputs of different inputs*: if it is not far above ``max_rel_diff``, the model barely
depends on its input and a runtime that ignored its input would pass, so it is reported too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RANDOM_SEED = 0
RANDOM_COUNT = 4


@dataclass(frozen=True)
class Figures:
    inputs: int
    max_abs_diff: float
    max_rel_diff: float
    top5_agreement: float | None  # None when no output is an (N, >= 5) score table
    spread: float | None  # None for a single input

    def as_dict(self) -> dict:
        return asdict(self)


def random_images(height: int, width: int, count: int = RANDOM_COUNT, seed: int = RANDOM_SEED) -> np.ndarray:
    """``count`` float32 RGB images in [0, 255], reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        cast = rng.uniform(40, 215, 3)
        contrast = rng.uniform(10, 90)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xs / max(width, 1) + np.sin(angle) * ys / max(height, 1))[..., None]
        slope = rng.uniform(-80, 80, 3)
        noise = rng.uniform(-1, 1, (height, width, 3)) * contrast
        images.append(cast + ramp * slope + noise)
    return np.clip(np.stack(images), 0, 255).astype(np.float32)


def scene_image(height: int, width: int) -> np.ndarray:
    """A drawn landscape as one float32 RGB image in [0, 255] (same picture at every size)."""
    rng = np.random.default_rng(2024)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    image = np.empty((height, width, 3), np.float32)
    sky = np.stack([70 + 110 * y, 130 + 90 * y, np.full_like(y, 235)], -1)  # deep blue to pale at the horizon
    image[:] = sky
    sun = (x - 0.78) ** 2 + (y - 0.2) ** 2 < 0.008
    image[sun] = (255, 236, 150)
    hills = y > 0.55 + 0.08 * np.sin(6 * x) + 0.04 * np.sin(17 * x + 1)
    grass = np.stack([50 + 40 * y, 120 + 60 * (1 - y), 40 + 10 * y], -1)
    grass += rng.normal(0, 12, grass.shape).astype(np.float32)  # texture
    image[hills] = grass[hills]
    wall = (x > 0.2) & (x < 0.42) & (y > 0.5) & (y < 0.78)
    image[wall] = (190, 60, 45)
    roof = (y <= 0.5) & (y > 0.36) & (np.abs(x - 0.31) < (y - 0.36) * 0.11 / 0.14 + 0.005)
    image[roof] = (90, 50, 40)
    door = (x > 0.29) & (x < 0.34) & (y > 0.64) & (y < 0.78)
    image[door] = (60, 35, 20)
    return np.clip(image, 0, 255)


def load_image(path, height: int, width: int) -> np.ndarray:
    """A user's picture, resized (bilinear) to the model's input, as float32 RGB in [0, 255]."""
    import keras

    picture = keras.utils.load_img(path, target_size=(height, width), interpolation="bilinear")
    return keras.utils.img_to_array(picture, data_format="channels_last", dtype="float32")


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> Figures:
    """Figures for one batch: ``reference`` (Keras) against ``candidate`` (the artifact), output by output."""
    if len(reference) != len(candidate):
        raise ValueError(f"the artifact gives {len(candidate)} outputs, the Keras model {len(reference)}")
    scale, worst = 0.0, 0.0
    rows = agree = 0
    for ref, got in zip(reference, candidate):
        ref = np.asarray(ref, np.float64)
        got = np.asarray(got, np.float64)
        if ref.shape != got.shape:
            raise ValueError(f"the artifact gives an output of shape {got.shape}, the Keras model {ref.shape}")
        if not ref.size:
            continue
        scale = max(scale, float(np.max(np.abs(ref))))
        diff = np.abs(ref - got)
        # A NaN or inf anywhere is a failure, not a value for max() to skip.
        worst = max(worst, float(np.max(diff))) if np.all(np.isfinite(diff)) else float("inf")
        if ref.ndim == 2 and ref.shape[1] >= 5:
            for r, g in zip(ref, got):
                rows += 1
                agree += set(np.argsort(r)[-5:]) == set(np.argsort(g)[-5:])
    rel = worst / scale if scale > 0 else (0.0 if worst == 0 else float("inf"))
    return Figures(inputs=len(reference[0]) if reference else 0, max_abs_diff=worst, max_rel_diff=rel,
                   top5_agreement=agree / rows if rows else None, spread=_spread(reference))


def _spread(reference: list[np.ndarray]) -> float | None:
    """The smallest relative difference between the Keras outputs of two different inputs."""
    batch = len(reference[0]) if reference else 0
    if batch < 2:
        return None
    flat = np.concatenate([np.asarray(r, np.float64).reshape(batch, -1) for r in reference], axis=1)
    scale = float(np.max(np.abs(flat))) or 1.0
    gaps = [float(np.max(np.abs(flat[i] - flat[j]))) / scale for i in range(batch) for j in range(i + 1, batch)]
    return min(gaps)
