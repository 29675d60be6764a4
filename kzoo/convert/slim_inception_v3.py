"""inception_v3 (tf_slim ``nets/inception_v3.py``) -> Keras InceptionV3.

Keras' InceptionV3 layers have automatic names (``conv2d_17``), so the 94 conv + BN pairs are
paired with slim's scopes by the order the builder writes them (:func:`graph_order`: each block's
branches 0 -> 3, convs in branch order). Slim BN has no gamma (``scale=False``), like Keras'.
``AuxLogits`` has no Keras counterpart and is reported as unused.
"""

from kzoo.convert._base import batch_norm, conv, dense, layers_of_type, register_family
from kzoo.errors import ConversionError

_SCOPE = "InceptionV3"
_SAME_AS_5B = ["Branch_0/Conv2d_0a_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_5x5",
               "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3",
               "Branch_3/Conv2d_0b_1x1"]
_BLOCK_6B = ["Branch_0/Conv2d_0a_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x7",
             "Branch_1/Conv2d_0c_7x1", "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_7x1",
             "Branch_2/Conv2d_0c_1x7", "Branch_2/Conv2d_0d_7x1", "Branch_2/Conv2d_0e_1x7",
             "Branch_3/Conv2d_0b_1x1"]

# Slim scopes in builder order ("sic" names are slim's own).
CONV_SCOPES = (
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    + [f"Mixed_5b/{s}" for s in _SAME_AS_5B]
    + [f"Mixed_5c/{s}" for s in ["Branch_0/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x1", "Branch_1/Conv_1_0c_5x5",
                                "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3",
                                "Branch_3/Conv2d_0b_1x1"]]
    + [f"Mixed_5d/{s}" for s in _SAME_AS_5B]
    + [f"Mixed_6a/{s}" for s in ["Branch_0/Conv2d_1a_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3",
                                "Branch_1/Conv2d_1a_1x1"]]
    + [f"Mixed_6{b}/{s}" for b in "bcde" for s in _BLOCK_6B]
    + [f"Mixed_7a/{s}" for s in ["Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1",
                                "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1", "Branch_1/Conv2d_1a_3x3"]]
    + [f"Mixed_7{b}/{s}" for b, third in (("b", "Conv2d_0b_3x1"), ("c", "Conv2d_0c_3x1"))
       for s in ["Branch_0/Conv2d_0a_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x3", f"Branch_1/{third}",
                 "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_1x3",
                 "Branch_2/Conv2d_0d_3x1", "Branch_3/Conv2d_0b_1x1"]]
)
assert len(CONV_SCOPES) == 94


@register_family("inception_v3", head=_SCOPE + "/Logits/Conv2d_1c_1x1/biases")
def inception_v3_rules(model, ctx):
    convs = layers_of_type(model, "Conv2D")
    norms = layers_of_type(model, "BatchNormalization")
    if len(convs) != len(CONV_SCOPES) or len(norms) != len(CONV_SCOPES):
        raise ConversionError(
            f"inception_v3 rules expect {len(CONV_SCOPES)} Conv2D + BatchNormalization layers, the "
            f"builder made {len(convs)} + {len(norms)} (a kzoo bug, please report it).")
    for conv_layer, bn_layer, scope in zip(convs, norms, CONV_SCOPES):
        yield from conv(conv_layer.name, f"{_SCOPE}/{scope}")
        yield from batch_norm(bn_layer.name, f"{_SCOPE}/{scope}/BatchNorm", scale=False)
    yield from dense("predictions", f"{_SCOPE}/Logits/Conv2d_1c_1x1")
