"""The Paddle side of tests/test_paddle.py, run in its own process (Paddle and TensorFlow are kept apart).

    python tests/paddle_reference.py SPEC.json

SPEC: ``{"family": "resnet" | "se_resnext" | "vgg" | "mobilenet", "stages": [...], "depth": 50, "size": 64,
"classes": 1000, "seed": 0, "out": folder, "inputs": x.npy (NHWC float64), "vgg_conv_bias": true,
"bn_gain": 1.0, "layout": "paddleclas" (PaddleClas' module structure, unnamed parameters)}``.

Builds the 2019 model of PaddlePaddle/models (fluid/PaddleCV/image_classification/models_name/*.py) in dygraph,
every parameter named as the 2019 release named it (``ParamAttr(name=...)``), draws random weights the way
tests/compat.py draws them (He-normal kernels, BatchNorm variance near 0.1, gamma near sqrt(0.1), offsets
N(0, 0.1)), and writes into ``out``:

- ``vars/``: one LoDTensor file per variable, saved by Paddle (``core.save_dense_tensor``, the ``save`` op's
  serializer: the 2019 per-variable format);
- ``model.pdparams`` (``paddle.save(state_dict)``) and ``params.combined`` (``save_combine``, sorted names);
- ``logits.npy``: the eval-mode model, in float64, on ``inputs`` (transposed to NCHW).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compat  # noqa: E402  (numpy-only harness constants)

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402
from paddle import ParamAttr, nn  # noqa: E402


class ConvBN(nn.Layer):
    """conv (no bias, symmetric padding) + BatchNorm (eps 1e-5) with the 2019 names."""

    def __init__(self, cin, cout, k, name, bn_name, stride=1, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups,
                              weight_attr=ParamAttr(name=f"{name}_weights"), bias_attr=False)
        self.bn = nn.BatchNorm(cout, act=act, epsilon=1e-5, param_attr=ParamAttr(name=f"{bn_name}_scale"),
                               bias_attr=ParamAttr(name=f"{bn_name}_offset"), moving_mean_name=f"{bn_name}_mean",
                               moving_variance_name=f"{bn_name}_variance")

    def forward(self, x):
        return self.bn(self.conv(x))


def fc(cin, cout, weights, bias):
    return nn.Linear(cin, cout, weight_attr=ParamAttr(name=weights), bias_attr=ParamAttr(name=bias))


class ResNet(nn.Layer):
    def __init__(self, depth, stages, classes):
        super().__init__()
        self.stem = ConvBN(3, 64, 7, "conv1", "bn_conv1", stride=2)
        self.blocks = nn.LayerList()
        cin = 64
        for s, (count, f) in enumerate(zip(stages, (64, 128, 256, 512))):
            for i in range(count):
                if depth in (101, 152) and s == 2:
                    name = f"res4{'a' if i == 0 else f'b{i}'}"
                else:
                    name = f"res{s + 2}{chr(97 + i)}"
                stride = 2 if s and not i else 1
                block = nn.Layer()
                block.a = ConvBN(cin, f, 1, f"{name}_branch2a", f"bn{name[3:]}_branch2a")
                block.b = ConvBN(f, f, 3, f"{name}_branch2b", f"bn{name[3:]}_branch2b", stride=stride)
                block.c = ConvBN(f, 4 * f, 1, f"{name}_branch2c", f"bn{name[3:]}_branch2c", act=None)
                block.short = (ConvBN(cin, 4 * f, 1, f"{name}_branch1", f"bn{name[3:]}_branch1", stride=stride,
                                      act=None) if i == 0 else None)
                self.blocks.append(block)
                cin = 4 * f
        self.fc = fc(2048, classes, "fc_0.w_0", "fc_0.b_0")

    def forward(self, x):
        x = F.max_pool2d(self.stem(x), 3, 2, padding=1)
        for b in self.blocks:
            short = b.short(x) if b.short is not None else x
            x = F.relu(short + b.c(b.b(b.a(x))))
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SEResNeXt(nn.Layer):
    def __init__(self, stages, classes):
        super().__init__()
        self.stem = ConvBN(3, 64, 7, "conv1", "conv1_bn", stride=2)
        self.blocks = nn.LayerList()
        cin = 64
        for s, (count, w) in enumerate(zip(stages, (128, 256, 512, 1024))):
            for i in range(count):
                name = f"conv{s + 2}_{i + 1}"
                stride = 2 if s and not i else 1
                block = nn.Layer()
                block.x1 = ConvBN(cin, w, 1, f"{name}_x1", f"{name}_x1_bn")
                block.x2 = ConvBN(w, w, 3, f"{name}_x2", f"{name}_x2_bn", stride=stride, groups=32)
                block.x3 = ConvBN(w, 2 * w, 1, f"{name}_x3", f"{name}_x3_bn", act=None)
                fc_name = f"fc{s + 2}_{i + 1}"
                block.sqz = fc(2 * w, 2 * w // 16, f"{fc_name}_sqz_weights", f"{fc_name}_sqz_offset")
                block.exc = fc(2 * w // 16, 2 * w, f"{fc_name}_exc_weights", f"{fc_name}_exc_offset")
                block.prj = (ConvBN(cin, 2 * w, 1, f"{name}_prj", f"{name}_prj_bn", stride=stride, act=None)
                             if i == 0 else None)
                self.blocks.append(block)
                cin = 2 * w
        self.drop = nn.Dropout(0.5, mode="downscale_in_infer")
        self.fc = fc(2048, classes, "fc6_weights", "fc6_offset")

    def forward(self, x):
        x = F.max_pool2d(self.stem(x), 3, 2, padding=1)
        for b in self.blocks:
            short = b.prj(x) if b.prj is not None else x
            y = b.x3(b.x2(b.x1(x)))
            s = paddle.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            s = F.sigmoid(b.exc(F.relu(b.sqz(s))))
            x = F.relu(short + y * s.unsqueeze(-1).unsqueeze(-1))
        return self.fc(self.drop(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


class VGG(nn.Layer):
    def __init__(self, stages, classes, size, conv_bias=True):
        super().__init__()
        self.convs = nn.LayerList()
        self.pool_after = []
        cin = 3
        for b, (count, width) in enumerate(zip(stages, (64, 128, 256, 512, 512)), start=1):
            for i in range(1, count + 1):
                bias = ParamAttr(name=f"conv{b}_{i}_offset") if conv_bias else False
                weights = ParamAttr(name=f"conv{b}_{i}_weights")
                self.convs.append(nn.Conv2D(cin, width, 3, padding=1, weight_attr=weights, bias_attr=bias))
                self.pool_after.append(i == count)
                cin = width
        side = size // 32
        self.fc6 = fc(512 * side * side, 4096, "fc6_weights", "fc6_offset")
        self.fc7 = fc(4096, 4096, "fc7_weights", "fc7_offset")
        self.fc8 = fc(4096, classes, "fc8_weights", "fc8_offset")
        self.drop = nn.Dropout(0.5, mode="downscale_in_infer")

    def forward(self, x):
        for conv, pool in zip(self.convs, self.pool_after):
            x = F.relu(conv(x))
            if pool:
                x = F.max_pool2d(x, 2, 2)
        x = self.drop(F.relu(self.fc6(paddle.flatten(x, 1))))  # flatten: (C, H, W) order
        x = self.drop(F.relu(self.fc7(x)))
        return self.fc8(x)


MOBILENET_BLOCKS = (("conv2_1", 64, 1), ("conv2_2", 128, 2), ("conv3_1", 128, 1), ("conv3_2", 256, 2),
                    ("conv4_1", 256, 1), ("conv4_2", 512, 2), ("conv5_1", 512, 1), ("conv5_2", 512, 1),
                    ("conv5_3", 512, 1), ("conv5_4", 512, 1), ("conv5_5", 512, 1), ("conv5_6", 1024, 2),
                    ("conv6", 1024, 1))


class MobileNet(nn.Layer):
    def __init__(self, classes):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, "conv1", "conv1_bn", stride=2)
        self.blocks = nn.LayerList()
        cin = 32
        for name, cout, stride in MOBILENET_BLOCKS:
            self.blocks.append(ConvBN(cin, cin, 3, f"{name}_dw", f"{name}_dw_bn", stride=stride, groups=cin))
            self.blocks.append(ConvBN(cin, cout, 1, f"{name}_sep", f"{name}_sep_bn"))
            cin = cout
        self.fc = fc(1024, classes, "fc7_weights", "fc7_offset")

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# PaddleClas' dygraph VGG and MobileNetV1 (ppcls/arch/backbone/legendary_models/{vgg,mobilenet_v1}.py in
# https://github.com/PaddlePaddle/PaddleClas): the same networks, parameters without ParamAttr names, so its
# .pdparams keys are the structured attribute paths (conv_block_1.conv1.weight, conv2_1._depthwise_conv._conv.weight).

class ClasConvBN(nn.Layer):
    def __init__(self, cin, cout, k, stride, groups=1):
        super().__init__()
        self._conv = nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias_attr=False)
        self._batch_norm = nn.BatchNorm(cout, act="relu")

    def forward(self, x):
        return self._batch_norm(self._conv(x))


class ClasSeparable(nn.Layer):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self._depthwise_conv = ClasConvBN(cin, cin, 3, stride, groups=cin)
        self._pointwise_conv = ClasConvBN(cin, cout, 1, 1)

    def forward(self, x):
        return self._pointwise_conv(self._depthwise_conv(x))


class ClasMobileNet(nn.Layer):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = ClasConvBN(3, 32, 3, 2)
        self.block_list = []
        cin = 32
        for name, cout, stride in MOBILENET_BLOCKS:
            self.block_list.append(self.add_sublayer(name, ClasSeparable(cin, cout, stride)))
            cin = cout
        self.out = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.conv1(x)
        for block in self.block_list:
            x = block(x)
        return self.out(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ClasVGGBlock(nn.Layer):
    def __init__(self, cin, cout, count):
        super().__init__()
        self.count = count
        for i in range(1, count + 1):
            setattr(self, f"conv{i}", nn.Conv2D(cin if i == 1 else cout, cout, 3, padding=1, bias_attr=False))

    def forward(self, x):
        for i in range(1, self.count + 1):
            x = F.relu(getattr(self, f"conv{i}")(x))
        return F.max_pool2d(x, 2, 2)


class ClasVGG(nn.Layer):
    def __init__(self, stages, classes, size):
        super().__init__()
        cin = 3
        for b, (count, width) in enumerate(zip(stages, (64, 128, 256, 512, 512)), start=1):
            setattr(self, f"conv_block_{b}", ClasVGGBlock(cin, width, count))
            cin = width
        self.drop = nn.Dropout(p=0.5, mode="downscale_in_infer")
        self.fc1 = nn.Linear(512 * (size // 32) ** 2, 4096)
        self.fc2 = nn.Linear(4096, 4096)
        self.fc3 = nn.Linear(4096, classes)

    def forward(self, x):
        for b in range(1, 6):
            x = getattr(self, f"conv_block_{b}")(x)
        x = self.drop(F.relu(self.fc1(paddle.flatten(x, 1))))
        x = self.drop(F.relu(self.fc2(x)))
        return self.fc3(x)


class ClasConvBNPlain(nn.Layer):
    """PaddleClas' resnet ConvBNLayer: ``.conv`` and ``.bn`` (eps 1e-5), ReLU optional."""

    def __init__(self, cin, cout, k, stride=1, act=True):
        super().__init__()
        self.act = act
        self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias_attr=False)
        self.bn = nn.BatchNorm(cout)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


class ClasBottleneck(nn.Layer):
    def __init__(self, cin, f, stride, projection):
        super().__init__()
        self.conv0 = ClasConvBNPlain(cin, f, 1)
        self.conv1 = ClasConvBNPlain(f, f, 3, stride)
        self.conv2 = ClasConvBNPlain(f, 4 * f, 1, act=False)
        self.projection = projection
        if projection:
            self.short = ClasConvBNPlain(cin, 4 * f, 1, stride, act=False)

    def forward(self, x):
        short = self.short(x) if self.projection else x
        return F.relu(self.conv2(self.conv1(self.conv0(x))) + short)


class ClasResNet(nn.Layer):
    """PaddleClas' ResNet "vb" (the 2019 network): stem.0, blocks.{j} (flat over stages), fc."""

    def __init__(self, stages, classes):
        super().__init__()
        self.stem = nn.Sequential(ClasConvBNPlain(3, 64, 7, 2))
        blocks, cin = [], 64
        for s, (count, f) in enumerate(zip(stages, (64, 128, 256, 512))):
            for i in range(count):
                blocks.append(ClasBottleneck(cin, f, 2 if s and not i else 1, i == 0))
                cin = 4 * f
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        x = self.blocks(F.max_pool2d(self.stem(x), 3, 2, padding=1))
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def clas_variable_kind(key: str) -> str:
    """A PaddleClas structured key as the 2019 suffix random_value understands."""
    for ending, suffix in (("._mean", "_mean"), ("._variance", "_variance"), ("_batch_norm.weight", "_scale"),
                           (".bn.weight", "_scale"), (".bias", "_offset")):
        if key.endswith(ending):
            return suffix
    return "_weights"


def build(spec):
    family, classes = spec["family"], spec.get("classes", 1000)
    if spec.get("layout") == "paddleclas":
        if family == "resnet":
            return ClasResNet(spec["stages"], classes)
        return ClasVGG(spec["stages"], classes, spec["size"]) if family == "vgg" else ClasMobileNet(classes)
    if family == "resnet":
        return ResNet(spec["depth"], spec["stages"], classes)
    if family == "se_resnext":
        return SEResNeXt(spec["stages"], classes)
    if family == "vgg":
        return VGG(spec["stages"], classes, spec["size"], spec.get("vgg_conv_bias", True))
    if family == "mobilenet":
        return MobileNet(classes)
    raise ValueError(family)


def random_value(name, shape, rng, gain=1.0):
    """tests/compat.py's rules, for Paddle's names and layouts (``gain``: compat.BN_GAIN's role)."""
    if name.endswith("_scale"):
        return gain * rng.uniform(*compat.GAMMA_RANGE, shape)
    if name.endswith("_variance"):
        return rng.uniform(*compat.BN_VARIANCE_RANGE, shape)
    if name.endswith(("_offset", "_mean", ".b_0")):
        return rng.normal(0.0, compat.OFFSET_STD, shape)
    fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]  # conv [out, in/g, kh, kw]; fc [in, out]
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


def main(spec_path):
    from paddle.base import core

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    (out / "vars").mkdir(parents=True, exist_ok=True)
    paddle.set_device("cpu")
    model = build(spec)
    model.eval()
    rng = np.random.default_rng(spec.get("seed", 0))
    state = model.state_dict()
    tensors = {}
    clas = spec.get("layout") == "paddleclas"
    for key, tensor in state.items():
        name = clas_variable_kind(key) if clas else tensor.name
        value = random_value(name, tuple(tensor.shape), rng, spec.get("bn_gain", 1.0))
        tensor.set_value(value.astype("float32"))
        tensors[tensor.name] = tensor
    for name, tensor in tensors.items():
        core.save_dense_tensor(tensor.value().get_tensor(), str(out / "vars" / name))
    names = sorted(tensors)
    core.save_combine_func([tensors[n].value().get_tensor() for n in names], names, str(out / "params.combined"),
                           True, False, False)
    paddle.save(model.state_dict(), str(out / "model.pdparams"))
    model.to(dtype="float64")
    x = np.load(spec["inputs"]).transpose(0, 3, 1, 2)
    with paddle.no_grad():
        logits = model(paddle.to_tensor(np.ascontiguousarray(x), dtype="float64")).numpy()
    np.save(out / "logits.npy", logits)


if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    main(sys.argv[1])
