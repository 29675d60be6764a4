"""The model index: every model name kzoo knows, as data, importable without Keras.

One row per model. Everything that needs a name (``create_model``, the weights registry, the converters,
finetune, ``kzoo bench``, the CLI) resolves it here, so an alias means the same thing everywhere and
``kzoo list`` / ``kzoo info`` never import Keras. ``tests/test_index.py`` proves each row against what
its family module builds.

A row says where the Keras-style builder lives (``module``/``builder`` under ``kzoo.architectures``), the
family its layer names and feature stages belong to, the default input size, the preprocessing mode
(Keras' ``caffe``/``tf``/``torch``, slim's ``rgb_mean``, ``unit`` for x / 255, or ``none`` when the model
scales its input in the graph), fixed builder arguments, the stage table the builder and the conversion rule both read, and
the conversion rule module under ``kzoo.convert`` for checkpoints that need one.

A row with ``weights_default`` is a *registration*: e.g. ``vgg_16`` is the ``VGG16`` builder whose weights
resolve under the name ``vgg_16`` (TF-slim checkpoints), with ``weights="tione"`` by default.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from kzoo.errors import UnknownModel

_PACKAGE = Path(__file__).parent


@dataclass(frozen=True)
class ModelInfo:
    name: str  # canonical: lower case, as the registry and ``kzoo list`` print it
    module: str  # family module under kzoo.architectures
    builder: str  # its Keras-style function
    family: str  # layer-naming family (feature stages, conversion rules)
    input_size: int  # default square input, as keras.applications' default_size
    preprocessing: str  # one of kzoo.preprocessing.MODEL_MODES (the registry's vocabulary)
    aliases: tuple = ()
    kwargs: Mapping = field(default_factory=dict)  # fixed builder arguments (alpha=1.4)
    weights_default: str | None = None  # set for registrations whose default tag is not "imagenet"
    stages: tuple = ()  # the stage table (blocks per stage), read by the builder and the rule
    rule: str | None = None  # conversion rule module under kzoo.convert
    public: bool = True  # ``kzoo.<builder>`` is exported (registrations of another row's builder are not)
    kind: str = "image"  # "image" (input_size x input_size x 3 pixels) or "text" (token ids; input_size = max length)

    @property
    def builder_path(self) -> Path:
        return _PACKAGE / "architectures" / f"{self.module}.py"

    @property
    def rule_path(self) -> Path | None:
        return None if self.rule is None else _PACKAGE / "convert" / f"{self.rule}.py"

    @property
    def import_path(self) -> str:
        return f"kzoo.architectures.{self.module}:{self.builder}"


def _rows():
    rows = []

    def add(name, module, builder, family, size, preprocessing, **kw):
        kw["kwargs"] = MappingProxyType(dict(kw.get("kwargs", {})))
        rows.append(ModelInfo(name, module, builder, family, size, preprocessing, **kw))

    add("xception", "xception", "Xception", "xception", 299, "tf")
    for depth, stages in ((11, (1, 1, 2, 2, 2)), (13, (2, 2, 2, 2, 2))):  # PaddlePaddle's weights (no Keras file)
        add(f"vgg{depth}", "vgg", f"VGG{depth}", "vgg", 224, "torch", weights_default="paddle", stages=stages,
            rule="paddle_vgg")
    for depth, stages in ((16, (2, 2, 3, 3, 3)), (19, (2, 2, 4, 4, 4))):
        add(f"vgg{depth}", "vgg", f"VGG{depth}", "vgg", 224, "caffe", stages=stages)
        # slim's vgg_{depth}: the same network; the rule flips the input channels so caffe mode applies.
        add(f"vgg_{depth}", "vgg", f"VGG{depth}", "vgg", 224, "caffe", kwargs={"name": f"vgg_{depth}"},
            weights_default="tione", stages=stages,
            rule="slim_vgg", public=False)
    resnet_stages = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
    for depth, stages in resnet_stages.items():
        add(f"resnet{depth}", "resnet", f"ResNet{depth}", "resnet", 224, "caffe", stages=stages)
        add(f"resnet{depth}v2", "resnet", f"ResNet{depth}V2", "resnet_v2", 224, "tf", stages=stages)
        add(f"resnet_v2_{depth}", "resnet", f"resnet_v2_{depth}", "resnet_v2", 224, "tf", weights_default="tione",
            stages=stages, rule="slim_resnet_v2")
        add(f"resnet_v1_{depth}", "resnet_v1", f"ResNetV1_{depth}", "resnet_v1", 224, "rgb_mean",
            weights_default="tione", stages=stages, rule="slim_resnet_v1")
    for depth, stages in resnet_stages.items():  # stride on the 3x3, symmetric padding (PaddlePaddle's release)
        add(f"resnet{depth}_v1_5", "resnet_v1_5", f"ResNet{depth}V1_5", "resnet", 224, "torch",
            aliases=(f"resnet{depth}_v1b", f"resnet{depth}v1.5"), weights_default="paddle", stages=stages,
            rule="paddle_resnet")
    for depth, stages in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3))):
        add(f"se_resnext{depth}_32x4d", "se_resnext", f"SEResNeXt{depth}_32x4d", "resnet", 224, "torch",
            weights_default="paddle", stages=stages, rule="paddle_se_resnext")
    add("inceptionv3", "inception_v3", "InceptionV3", "inception_v3", 299, "tf")
    add("inception_v3", "inception_v3", "InceptionV3", "inception_v3", 299, "tf", weights_default="tione",
        rule="slim_inception_v3", public=False)
    add("inceptionresnetv2", "inception_resnet_v2", "InceptionResNetV2", "inception_resnet_v2", 299, "tf")
    add("inception_v1", "inception", "InceptionV1", "inception", 224, "tf", aliases=("googlenet",),
        weights_default="tione", rule="slim_inception")
    add("inception_v2", "inception", "InceptionV2", "inception", 224, "tf", weights_default="tione",
        rule="slim_inception")
    add("inception_v4", "inception", "InceptionV4", "inception", 299, "tf", weights_default="tione",
        rule="slim_inception")
    # The SSD feature extractor of the Object Detection API's ssd_inception_v2_coco (six feature maps).
    add("ssd_inception_v2", "inception", "SSDInceptionV2", "ssd_inception_v2", 300, "tf", weights_default="coco",
        rule="od_ssd_inception_v2")
    add("ssd_inception_v2_coco", "detection_ssd", "SSDInceptionV2COCO", "ssd_inception_v2", 300, "none",
        weights_default="coco", rule="od_ssd_inception_v2")
    # The Object Detection API's faster_rcnn_resnet50_coco and rfcn_resnet101_coco, whole (backbone, RPN, box
    # classifier, post-processing).
    add("faster_rcnn_resnet50_coco", "detection_faster_rcnn", "FasterRCNNResNet50COCO", "resnet_v1", 600, "none",
        weights_default="coco", rule="od_resnet_v1")
    add("rfcn_resnet101_coco", "detection_faster_rcnn", "RFCNResNet101COCO", "resnet_v1", 600, "none",
        weights_default="coco", rule="od_resnet_v1")
    # ... and faster_rcnn_resnet101_coco_11_06_2017, the archive of the UAI-Train fine-tuning recipe.
    add("faster_rcnn_resnet101_coco", "detection_faster_rcnn", "FasterRCNNResNet101COCO", "resnet_v1", 600, "none",
        weights_default="coco", rule="od_resnet_v1")
    add("mobilenet", "mobilenet", "MobileNet", "mobilenet", 224, "tf")
    add("mobilenet_v1_relu", "mobilenet", "MobileNetV1ReLU", "mobilenet", 224, "torch", weights_default="paddle",
        rule="paddle_mobilenet")
    add("mobilenetv2", "mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, "tf")
    add("mobilenet_v2", "mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, "tf", kwargs={"alpha": 1.0},
        weights_default="tione", rule="slim_mobilenet_v2", public=False)
    add("mobilenet_v2_140", "mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, "tf", kwargs={"alpha": 1.4},
        weights_default="tione", rule="slim_mobilenet_v2", public=False)
    add("mobilenetv3small", "mobilenet_v3", "MobileNetV3Small", "mobilenet_v3", 224, "none")
    add("mobilenetv3large", "mobilenet_v3", "MobileNetV3Large", "mobilenet_v3", 224, "none")
    for depth, stages in ((121, (6, 12, 24, 16)), (169, (6, 12, 32, 32)), (201, (6, 12, 48, 32))):
        add(f"densenet{depth}", "densenet", f"DenseNet{depth}", "densenet", 224, "torch", stages=stages)
    add("nasnetmobile", "nasnet", "NASNetMobile", "nasnet", 224, "tf", aliases=("nasnet-mobile",))
    add("nasnetlarge", "nasnet", "NASNetLarge", "nasnet", 331, "tf", aliases=("nasnet_large", "nasnet-large"))
    add("nasnet_mobile", "nasnet", "nasnet_mobile", "nasnet", 224, "tf", aliases=("nasnet_a_mobile", "nasnet-a_mobile"),
        weights_default="tione", rule="slim_nasnet")
    for digit, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
        add(f"efficientnetb{digit}", "efficientnet", f"EfficientNetB{digit}", "efficientnet", size, "none",
            aliases=(f"efficientnet_b{digit}", f"efficientnet-b{digit}"))
    for variant, size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300), ("s", 384), ("m", 480), ("l", 480)):
        keras_name = f"EfficientNetV2{variant.upper()}"
        add(f"efficientnetv2{variant}", "efficientnet_v2", keras_name, "efficientnet_v2", size, "none",
            aliases=(f"efficientnetv2_{variant}", f"efficientnetv2-{variant}", f"efficientnet_v2_{variant}"))
    convnext_stages = {"tiny": (3, 3, 9, 3), "small": (3, 3, 27, 3), "base": (3, 3, 27, 3),
                       "large": (3, 3, 27, 3), "xlarge": (3, 3, 27, 3)}
    for variant, stages in convnext_stages.items():
        keras_name = "ConvNeXtXLarge" if variant == "xlarge" else f"ConvNeXt{variant.capitalize()}"
        add(f"convnext{variant}", "convnext", keras_name, "convnext", 224, "none", aliases=(f"convnext_{variant}",),
            stages=stages)
    add("shufflenet_v2_050", "shufflenet_v2", "ShuffleNetV2", "shufflenet_v2", 224, "unit",
        kwargs={"alpha": 0.5}, weights_default="tione", rule="slim_shufflenet")
    # Google's BERT-Base (L-12 H-768 A-12) as keras-hub's BertBackbone; kwargs: the size for weights=None.
    for language, vocabulary_size in (("chinese", 21128), ("uncased", 30522)):
        add(f"bert_base_{language}", "bert", "bert_backbone", "bert", 512, "none", kind="text",
            kwargs={"vocabulary_size": vocabulary_size, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
                    "intermediate_dim": 3072, "num_segments": 2},
            weights_default="tione", rule="google_bert", public=False)
    return rows


MODELS: Mapping[str, ModelInfo] = MappingProxyType({row.name: row for row in _rows()})
_ALIASES = MappingProxyType({alias: row.name for row in MODELS.values() for alias in row.aliases})


def normalise(name: str) -> str:
    """The canonical spelling of ``name`` if it is a known model or alias, else ``name`` lower-cased."""
    key = str(name).lower()
    return _ALIASES.get(key, key)


def get(name: str) -> ModelInfo:
    """The row for ``name`` (any alias, any case); UnknownModel names close matches."""
    key = normalise(name)
    if key in MODELS:
        return MODELS[key]
    close = [n for n in sorted(MODELS) if key[:4] in n][:8]
    hint = f" Did you mean one of {close}?" if close else ""
    raise UnknownModel(f"Unknown model {name!r}.{hint} Run `kzoo list` to see every model name.")


def names(pattern: str | None = None) -> list[str]:
    """Sorted canonical names, optionally filtered by a glob."""
    result = sorted(MODELS)
    if pattern:
        result = [n for n in result if fnmatch.fnmatch(n, pattern.lower())]
    return result


def public_builders() -> dict:
    """``{builder name: row}`` for the Keras-style functions ``kzoo`` exports (``kzoo.ResNet50``)."""
    return {row.builder: row for row in MODELS.values() if row.public}


def families() -> tuple:
    """The family modules under kzoo.architectures, plus Keras' ``resnet_v2`` module name."""
    return tuple(sorted({row.module for row in MODELS.values()} | {"resnet_v2"}))
