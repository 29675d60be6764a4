"""``kzoo.resnet_v2``: the ResNet v2 builders under Keras' module name, with its preprocessing ("tf" mode).

The builders live in :mod:`kzoo.architectures.resnet`; this module only mirrors
``keras.applications.resnet_v2`` so ``kzoo.resnet_v2.preprocess_input`` scales to [-1, 1] as Keras' does.
"""

from kzoo.architectures.resnet import ResNet50V2, ResNet101V2, ResNet152V2  # noqa: F401
from kzoo.architectures.resnet import preprocess_input_v2 as preprocess_input  # noqa: F401
from kzoo.preprocessing import decode_predictions  # noqa: F401

__all__ = ["ResNet50V2", "ResNet101V2", "ResNet152V2"]
