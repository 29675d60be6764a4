"""The training entry point: the two-phase fine-tuning recipe (head first, then the backbone's top)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras

from kzoo.finetune import freezing  # as a module: fit_two_phase's ``unfreeze`` argument shadows the function
from kzoo.finetune.freezing import TrainableSummary
from kzoo.finetune.layer_decay import _make_optimizer, layer_decay_scales


def _strategy_scope(model):
    """Compile (and create optimizer variables) in the strategy the model was built under."""
    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.scope()
    return contextlib.nullcontext()


def _default_loss(model):
    return "binary_crossentropy" if model.output_shape[-1] == 1 else "sparse_categorical_crossentropy"


@dataclass
class TwoPhaseHistory:
    head: object = None  # keras History of phase 1 (None if head_epochs == 0)
    finetune: object = None  # keras History of phase 2 (None if finetune_epochs == 0)
    head_summary: TrainableSummary | None = None
    finetune_summary: TrainableSummary | None = None

    @property
    def history(self) -> dict:
        """Both phases' metrics, concatenated epoch by epoch."""
        merged = {}
        for h in (self.head, self.finetune):
            for key, values in (h.history if h else {}).items():
                merged.setdefault(key, []).extend(values)
        return merged


def fit_two_phase(model, train, val=None, head_epochs=5, finetune_epochs=5, unfreeze=None, lr=1e-3,
                  finetune_lr_factor=0.1, layer_decay=None, decay_groups=10, optimizer="adam", loss=None,
                  metrics=("accuracy",), callbacks=None, keep_bn_frozen=True, jit_compile="auto",
                  verbose="auto", **fit_kwargs) -> TwoPhaseHistory:
    """The standard fine-tuning recipe.

    1. Freeze the backbone, train the head for ``head_epochs`` at ``lr``.
    2. Unfreeze from ``unfreeze`` on (a layer, stage, glob or fraction, see ``unfreeze``; None means
       the whole backbone), keep BatchNormalization frozen, and train ``finetune_epochs`` more at
       ``lr * finetune_lr_factor`` with a fresh optimizer. With ``layer_decay=r`` (e.g. 0.7), lower
       layers get ``r ** k`` of that rate (see ``layer_decay_scales``).

    ``train``/``val`` are anything ``model.fit`` takes (a ``tf.data.Dataset``, or ``(x, y)`` tuples).
    The loss defaults to sparse categorical (binary for a one-unit sigmoid head). ``jit_compile`` goes
    to ``model.compile`` (XLA compilation of a deep net takes long on CPU: pass False there).
    Extra keyword arguments go to both ``model.fit`` calls (``batch_size``, ``steps_per_epoch`` ...).
    """
    loss = loss or _default_loss(model)
    metrics = list(metrics or [])
    x, y, val_data = _fit_args(train, val)
    result = TwoPhaseHistory()
    if head_epochs:
        result.head_summary = freezing.freeze(model, keep_bn_frozen=keep_bn_frozen)
        with _strategy_scope(model):
            model.compile(optimizer=_make_optimizer(optimizer, lr), loss=loss, metrics=metrics,
                          jit_compile=jit_compile)
        result.head = model.fit(x, y, validation_data=val_data, epochs=head_epochs, callbacks=callbacks,
                                verbose=verbose, **fit_kwargs)
    if finetune_epochs:
        result.finetune_summary = freezing.unfreeze(model, start=unfreeze, keep_bn_frozen=keep_bn_frozen)
        scales = layer_decay_scales(model, layer_decay, decay_groups) if layer_decay else None
        with _strategy_scope(model):
            model.compile(optimizer=_make_optimizer(optimizer, lr * finetune_lr_factor, scales), loss=loss,
                          metrics=metrics, jit_compile=jit_compile)
        result.finetune = model.fit(x, y, validation_data=val_data, initial_epoch=head_epochs,
                                    epochs=head_epochs + finetune_epochs, callbacks=callbacks, verbose=verbose,
                                    **fit_kwargs)
    return result


def _fit_args(train, val):
    x, y = (train if isinstance(train, tuple) else (train, None))
    return x, y, val
