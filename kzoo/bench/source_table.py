"""The comparison sources ``kzoo bench`` knows: registering a Candidate class here adds a source."""

from __future__ import annotations

from kzoo.bench.detection_candidates import Detector, DetectorHeads
from kzoo.bench.engine_candidates import ENGINE_CANDIDATES, OPTIMIZED_SUFFIX
from kzoo.bench.keras_candidates import (
    KerasApplications,
    KerasModelCandidate,
    Kzoo,
    KzooOptimized,
)
from kzoo.bench.timm_candidate import Timm

# Name -> class, in the order of the table's and CSV's ratio columns.
SOURCES = {candidate.name: candidate
           for candidate in (Kzoo, KzooOptimized, *ENGINE_CANDIDATES, KerasApplications, Timm,
                             Detector, DetectorHeads)}
# The detection workload (a detector against itself without post-processing) has its own pair of sources;
# BASELINES are ``--compare``'s, and the table's ratio columns add the detection baseline only for detectors.
DETECTION_SOURCES = (Detector.name, DetectorHeads.name)
DETECTION_BASELINES = (DetectorHeads.name,)
BASELINES = tuple(name for name, candidate in SOURCES.items() if candidate.baseline and name not in DETECTION_SOURCES)
OURS = tuple(name for name, candidate in SOURCES.items() if not candidate.baseline)
# ``--engine`` names -> the sources that run kzoo's model there (plain, optimised): Keras is kzoo's own model.
ENGINE_SOURCES = {"keras": ("kzoo", "kzoo-opt"),
                  **{c.engine: (c.name, c.name + OPTIMIZED_SUFFIX) for c in ENGINE_CANDIDATES if not c.optimize}}


def build_model(name: str, source: str, *, image_size=None, precision="float32", batch_size=None):
    """A randomly initialised classifier (``include_top=True``) from a source that builds a Keras model.

    ``image_size`` None keeps the model's own default input size. ``batch_size`` is for ``kzoo-opt``:
    :func:`kzoo.optimize_for_inference` picks its Winograd tiles for the batch it will run.
    """
    candidate = SOURCES.get(source)
    if candidate is None or not issubclass(candidate, KerasModelCandidate):
        raise ValueError(f"unknown source {source!r}; expected one of {tuple(SOURCES)}")
    return candidate.create_model(name, image_size=image_size, precision=precision, batch_size=batch_size)
