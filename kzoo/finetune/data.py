"""Image folders as ``tf.data`` batches sized and labelled for a model, with optional augmentation."""

from __future__ import annotations

import keras
from keras import layers


DEFAULT_AUGMENT = {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1}


def _augmenter(augment, seed):
    if augment is True:
        augment = DEFAULT_AUGMENT
    known = {"flip", "rotation", "zoom", "contrast", "translation", "brightness"}
    unknown = set(augment) - known
    if unknown:
        raise ValueError(f"Unknown augmentation options {sorted(unknown)}; known: {sorted(known)}.")
    steps = []
    if augment.get("flip"):
        steps.append(layers.RandomFlip(augment["flip"], seed=seed))
    if augment.get("rotation"):
        steps.append(layers.RandomRotation(augment["rotation"], seed=seed))
    if augment.get("zoom"):
        steps.append(layers.RandomZoom(augment["zoom"], seed=seed))
    if augment.get("translation"):
        t = augment["translation"]
        steps.append(layers.RandomTranslation(t, t, seed=seed))
    if augment.get("contrast"):
        steps.append(layers.RandomContrast(augment["contrast"], seed=seed))
    if augment.get("brightness"):
        steps.append(layers.RandomBrightness(augment["brightness"], seed=seed))
    return keras.Sequential(steps, name="augmentation")


def _model_image_size(model, default=(224, 224)):
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    hw = shape[2:4] if keras.config.image_data_format() == "channels_first" else shape[1:3]
    return tuple(hw) if None not in hw else default


def image_dataset(directory, model=None, image_size=None, batch_size=32, validation_split=None, subset=None,
                  seed=1337, augment=None, shuffle=True, label_mode=None, **kwargs):
    """``keras.utils.image_dataset_from_directory`` at the model's input size, labels matching its head.

    - Images stay raw (0-255 floats): a ``build_classifier`` model preprocesses them itself.
    - ``label_mode`` defaults to ``"binary"`` for a one-unit head, ``"int"`` otherwise.
    - ``augment``: True (horizontal flip, small rotation and zoom) or a dict with any of ``flip``,
      ``rotation``, ``zoom``, ``translation``, ``contrast``, ``brightness`` (Keras' random layers'
      factors). Applied to the training subset only.
    - ``subset="both"`` with ``validation_split`` returns ``(train, val)``.

    Each returned dataset has ``class_names``.
    """
    import tensorflow as tf

    if image_size is None:
        image_size = _model_image_size(model) if model is not None else (224, 224)
    if label_mode is None:
        label_mode = "binary" if model is not None and model.output_shape[-1] == 1 else "int"
    result = keras.utils.image_dataset_from_directory(
        directory, image_size=image_size, batch_size=batch_size, validation_split=validation_split,
        subset=subset, seed=seed, shuffle=shuffle, label_mode=label_mode, **kwargs)
    datasets = list(result) if isinstance(result, (list, tuple)) else [result]
    names = datasets[0].class_names
    out = []
    for i, ds in enumerate(datasets):
        training = subset != "validation" and i == 0
        if augment and training:
            aug = _augmenter(augment, seed)
            ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        ds.class_names = names
        out.append(ds)
    return tuple(out) if len(out) > 1 else out[0]
