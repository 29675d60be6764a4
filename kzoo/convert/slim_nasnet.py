"""nasnet_mobile (research/slim ``nets/nasnet/nasnet.py``, NASNet-A Mobile) -> Keras NASNetMobile.

Slim names have no top-level scope. Cells map as (slim -> Keras block id): ``cell_stem_0`` ->
``stem_1``, ``cell_stem_1`` -> ``stem_2``, ``cell_0..3`` -> ``0..3``, ``reduction_cell_0`` ->
``reduce_4``, ``cell_4..7`` -> ``5..8``, ``reduction_cell_1`` -> ``reduce_8``, ``cell_8..11`` ->
``9..12``. Inside a cell:

- ``1x1`` + ``beginning_bn`` -> ``{normal,reduction}_conv_1_<id>`` + ``..._bn_1_<id>``;
- the previous-layer adjustment: ``prev_1x1`` + ``prev_bn`` -> ``adjust_conv_projection_<id>`` +
  ``adjust_bn_<id>``, or (previous layer at twice the resolution) ``path1_conv``, ``path2_conv`` +
  ``final_path_bn`` -> ``adjust_conv_1_<id>``, ``adjust_conv_2_<id>`` + ``adjust_bn_<id>``; which
  one a cell has is read off the Keras model;
- ``comb_iter_k/{left,right}/separable_KxK_j`` + ``bn_sep_KxK_j`` -> ``separable_conv_j_<op>_<id>``
  + ``separable_conv_j_bn_<op>_<id>``, with the ops below.

``aux_7`` (the training-only auxiliary head) is reported unused; ``final_layer/FC`` is the
1001-class head.
"""

from kzoo.convert._base import batch_norm, conv, dense, register_family, separable

# (slim comb_iter/side, kernel size, Keras op name) of every separable op in a cell.
_NORMAL_OPS = [("comb_iter_0/left", 5, "left1"), ("comb_iter_0/right", 3, "right1"),
               ("comb_iter_1/left", 5, "left2"), ("comb_iter_1/right", 3, "right2"),
               ("comb_iter_4/left", 3, "left5")]
_REDUCTION_OPS = [("comb_iter_0/left", 5, "left1"), ("comb_iter_0/right", 7, "right1"),
                  ("comb_iter_1/right", 7, "right2"), ("comb_iter_2/right", 5, "right3"),
                  ("comb_iter_4/left", 3, "left4")]


def _cells():
    """(slim scope, Keras block id, is reduction) for NASNet-A Mobile (4 normal cells per stage)."""
    yield "cell_stem_0", "stem_1", True
    yield "cell_stem_1", "stem_2", True
    for i in range(12):
        if i in (4, 8):
            yield f"reduction_cell_{i // 4 - 1}", f"reduce_{i}", True
        yield f"cell_{i}", str(i if i < 4 else i + 1), False


def _cell_rules(names, slim, block_id, reduction):
    kind = "reduction" if reduction else "normal"
    if f"adjust_conv_projection_{block_id}" in names:
        yield from conv(f"adjust_conv_projection_{block_id}", f"{slim}/prev_1x1")
        yield from batch_norm(f"adjust_bn_{block_id}", f"{slim}/prev_bn")
    elif f"adjust_conv_1_{block_id}" in names:
        yield from conv(f"adjust_conv_1_{block_id}", f"{slim}/path1_conv")
        yield from conv(f"adjust_conv_2_{block_id}", f"{slim}/path2_conv")
        yield from batch_norm(f"adjust_bn_{block_id}", f"{slim}/final_path_bn")
    yield from conv(f"{kind}_conv_1_{block_id}", f"{slim}/1x1")
    yield from batch_norm(f"{kind}_bn_1_{block_id}", f"{slim}/beginning_bn")
    for branch, size, op in _REDUCTION_OPS if reduction else _NORMAL_OPS:
        for j in (1, 2):
            keras = f"{kind}_{op}_{block_id}"
            yield from separable(f"separable_conv_{j}_{keras}", f"{slim}/{branch}/separable_{size}x{size}_{j}")
            yield from batch_norm(f"separable_conv_{j}_bn_{keras}", f"{slim}/{branch}/bn_sep_{size}x{size}_{j}")


@register_family("nasnet_mobile", head="final_layer/FC/biases")
def nasnet_mobile_rules(model, ctx):
    names = {layer.name for layer in model.layers}
    yield from conv("stem_conv1", "conv0")
    yield from batch_norm("stem_bn1", "conv0_bn")
    for slim, block_id, reduction in _cells():
        yield from _cell_rules(names, slim, block_id, reduction)
    yield from dense("predictions", "final_layer/FC")
