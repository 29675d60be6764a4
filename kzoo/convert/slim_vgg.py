"""vgg_16 / vgg_19 (tf_slim ``nets/vgg.py``) -> the Keras VGG16 / VGG19 layer names.

``vgg_16/conv{b}/conv{b}_{i}`` -> ``block{b}_conv{i}``; the fully-connected layers are convs in slim:
``fc6`` [7,7,512,4096] -> ``fc1`` (flattened row-major (h, w, c), as Keras' channels_last
``Flatten``), ``fc7`` -> ``fc2``, ``fc8`` [1,1,4096,1000] -> ``predictions`` (1000 classes, no
background).

Input channels: slim's VGG was fed RGB minus the ImageNet mean; Keras VGG weights, and so
``kzoo.vgg16.preprocess_input`` ("caffe" mode), feed BGR minus the mean. The first conv's input
channels are reversed here so the converted weights take Keras' preprocessing, like every other
VGG weight file kzoo serves.
"""

from kzoo import index
from kzoo.convert._base import conv, dense, flip_input_channels, register_family


@register_family("vgg_16", "vgg_19", head="{model}/fc8/biases")
def vgg_rules(model, ctx):
    scope = ctx.model_name
    for block, count in enumerate(index.get(scope).stages, start=1):
        for i in range(1, count + 1):
            first = block == 1 and i == 1
            yield from conv(f"block{block}_conv{i}", f"{scope}/conv{block}/conv{block}_{i}", bias=True,
                            transform=flip_input_channels if first else None)
    yield from dense("fc1", f"{scope}/fc6", head=False)
    yield from dense("fc2", f"{scope}/fc7", head=False)
    yield from dense("predictions", f"{scope}/fc8")
