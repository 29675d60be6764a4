"""Loading a weight file into a model whose head differs, saying what was skipped."""

from __future__ import annotations

import logging
import os
import warnings

from kzoo.finetune.layer_lookup import head_layers


def load_pretrained(model, path, warn=True):
    """Load a weight file by layer name, skipping the layers whose shapes differ (a new head).

    Returns the ``LoadReport`` of ``kzoo.load_weights``; anything skipped is also named in a warning,
    so a head that silently stayed random (TF-slim's ``Assign requires shapes`` trap, solved the
    other way round) cannot go unnoticed.
    """
    from kzoo.formats.keras_h5 import load_weights

    report = load_weights(model, os.fspath(path), skip_mismatch=True)
    if report.ok:
        return report
    try:
        head = set(head_layers(model))
    except ValueError:
        head = set()
    if warn and (set(report.skipped) - head or report.unexpected):
        warnings.warn(f"Some weights of {os.fspath(path)!r} were not loaded into {model.name!r}; the model "
                      f"layers named keep their initial values:\n{report}", stacklevel=2)
    else:  # only the new head differs: expected when fine-tuning, but still said
        logging.getLogger("kzoo").info("New head %s starts from its initialiser:\n%s", sorted(head), report)
    return report
