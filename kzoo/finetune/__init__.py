"""Transfer learning made the easy way the right way.

- ``build_classifier``: backbone + head that takes raw 0-255 images (the backbone's preprocessing is a
  layer inside the model, so a saved model cannot be fed wrongly scaled images).
- ``freeze`` / ``unfreeze``: choose what trains by layer name, stage name, glob or fraction, or with
  TF-slim style ``trainable=`` / ``exclude=`` globs. BatchNormalization stays frozen by default: a
  frozen BN layer runs in inference mode in Keras 3, so its moving statistics never move (the
  keras#9214 fine-tuning trap).
- ``load_pretrained``: load a weight file when the head differs; mismatched layers are skipped and
  named in a warning and in the returned report, never silently.
- ``fit_two_phase``: head first, then the top of the backbone at a lower rate, optionally with
  layer-wise learning-rate decay (TF and JAX backends).
- ``image_dataset``: a folder of class sub-folders -> ``tf.data`` batches at the model's input size,
  with optional augmentation.
- ``extract_features`` / ``linear_probe``: features computed once and cached on disk, keyed by the
  model, its weights and the data.

Every function works inside ``tf.distribute.MirroredStrategy`` (build the model in ``strategy.scope()``;
compiling is done in the model's own strategy) and with ``keras.distribution.DataParallel`` on JAX.

One module per job: ``preprocessing_layer`` (input scaling), ``classifier`` (backbone + head),
``loading`` (weight files with another head), ``layer_lookup`` (a model's layers and head),
``freezing``, ``layer_decay``, ``training`` (``fit_two_phase``), ``data``, ``features`` (cached) and
``probe``.
"""

from kzoo.finetune.classifier import build_classifier
from kzoo.finetune.data import image_dataset
from kzoo.finetune.features import extract_features, feature_extractor
from kzoo.finetune.freezing import TrainableSummary, freeze, unfreeze
from kzoo.finetune.layer_decay import layer_decay_scales
from kzoo.finetune.layer_lookup import head_layers
from kzoo.finetune.loading import load_pretrained
from kzoo.finetune.preprocessing_layer import ImagePreprocessing, preprocessing_mode
from kzoo.finetune.probe import ProbeResult, linear_probe
from kzoo.finetune.training import TwoPhaseHistory, fit_two_phase

__all__ = [
    "ImagePreprocessing",
    "preprocessing_mode",
    "build_classifier",
    "load_pretrained",
    "head_layers",
    "freeze",
    "unfreeze",
    "TrainableSummary",
    "fit_two_phase",
    "TwoPhaseHistory",
    "layer_decay_scales",
    "image_dataset",
    "feature_extractor",
    "extract_features",
    "linear_probe",
    "ProbeResult",
]
