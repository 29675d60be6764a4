"""Detection backbones from the TF Object Detection API archives (issue 12, steps 1-2), proven against
replicas of the detectors' graphs.

The Object Detection API cannot be installed beside TF 2.21, so each test rebuilds the part of the detector
that owns weights with tf_slim, under the archives' exact variable scopes
(tensorflow/models research/object_detection ``models/faster_rcnn_resnet_v1_feature_extractor.py``,
``models/ssd_inception_v2_feature_extractor.py``, ``models/feature_map_generators.py``): random He-scaled
weights and randomised BatchNorm statistics (``_ckpt_helpers.randomise_graph_variables``), saved as a V2
checkpoint inside a ``<name>/model.ckpt.*`` tarball like the zoo's. The converted Keras parts must match every
feature map within 1e-5 relative (float32), after asserting that the reference moves by >= 100x that between
the batch's two inputs. Each transform of the rules is shown necessary by a case that fails without it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
slim = pytest.importorskip("tf_slim")

import keras  # noqa: E402
from _ckpt_helpers import make_tar, randomise_graph_variables, v2_files  # noqa: E402
from compat import assert_outputs_differ  # noqa: E402

import kzoo  # noqa: E402
import kzoo.convert as convert  # noqa: E402
from kzoo.architectures import resnet_v1  # noqa: E402
from kzoo.convert import convert_checkpoint, od_resnet_v1  # noqa: E402
from kzoo.detection import coco_labels, resnet_v1_stages  # noqa: E402
from kzoo.errors import ConversionError  # noqa: E402

v1 = tf.compat.v1
RTOL = 1e-5
RESNET_GAIN = {"bottleneck_v1/conv3/": 0.3}  # as tests/test_slim_builders.py: keeps deep residual sums O(1)
SSD_ANCHORS = (3, 6, 6, 6, 6, 6)  # boxes per cell of BoxPredictor_0..5 (reduce_boxes_in_lowest_layer)


def _relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def _assert_close(actual, expected, what):
    change = assert_outputs_differ(expected[:1], expected[1:2], RTOL, what)
    error = _relative_error(actual, expected)
    print(f"{what}: input sensitivity {change:.2e}, max relative error {error:.2e}")
    assert error < RTOL, f"{what}: max relative error {error:.2e}"


def _save_archive(session, root, name, pipeline_config=None):
    """``<root>/<name>.tar.gz`` holding ``<name>/model.ckpt.*`` (V2), ``checkpoint`` and ``pipeline.config``, as
    the zoo packs it."""
    prefix = root / "ckpt" / "model.ckpt"
    prefix.parent.mkdir(parents=True)
    v1.train.Saver().save(session, str(prefix), write_meta_graph=False)
    members = {f"{name}/{f.name}": f for f in v2_files(prefix)}
    members[f"{name}/checkpoint"] = prefix.parent / "checkpoint"
    if pipeline_config is not None:
        (root / "pipeline.config").write_text(pipeline_config)
        members[f"{name}/pipeline.config"] = root / "pipeline.config"
    return make_tar(root / f"{name}.tar.gz", members)


# ------------------------------------------------------------------------------------------------
# Faster R-CNN / R-FCN ResNet v1
# ------------------------------------------------------------------------------------------------


def faster_rcnn_replica(images, crops, depth, output_strides=(16, 8)):
    """The weight-owning part of a Faster R-CNN ResNet v1 detector: the first stage at each output stride
    (one set of variables), the RPN conv and box predictor, block4 on the crops and the box classifier.
    Returns ({output stride: block3}, block4 on crops)."""
    from tf_slim.nets import resnet_utils
    from tf_slim.nets import resnet_v1 as slim_resnet_v1

    arch = f"resnet_v1_{depth}"
    arg_scope = slim_resnet_v1.resnet_arg_scope(batch_norm_epsilon=1e-5, batch_norm_scale=True)
    block3 = {}
    for output_stride in output_strides:
        with slim.arg_scope(arg_scope), v1.variable_scope("FirstStageFeatureExtractor", reuse=v1.AUTO_REUSE):
            # The full net is built, block4 included (the API's 'unused, untrained' block4).
            _, end_points = getattr(slim_resnet_v1, arch)(images, num_classes=None, is_training=False,
                                                          global_pool=False, output_stride=output_stride,
                                                          reuse=v1.AUTO_REUSE, scope=arch)
        block3[output_stride] = next(v for k, v in end_points.items() if k.endswith(f"{arch}/block3"))
    # RPN: a scope-less 3x3 conv ('Conv', ReLU6, no BN) and two 1x1 predictors, 12 anchors.
    rpn = slim.conv2d(block3[output_strides[0]], 512, [3, 3], activation_fn=tf.nn.relu6)
    with v1.variable_scope("FirstStageBoxPredictor"):
        slim.conv2d(rpn, 48, [1, 1], activation_fn=None, scope="BoxEncodingPredictor")
        slim.conv2d(rpn, 24, [1, 1], activation_fn=None, scope="ClassPredictor")
    with slim.arg_scope(arg_scope), slim.arg_scope([slim.batch_norm], is_training=False):
        with v1.variable_scope("SecondStageFeatureExtractor"), v1.variable_scope(arch):
            unit = {"depth": 2048, "depth_bottleneck": 512, "stride": 1}
            blocks = [resnet_utils.Block("block4", slim_resnet_v1.bottleneck, [unit] * 3)]
            block4 = resnet_utils.stack_blocks_dense(crops, blocks)
    with v1.variable_scope("SecondStageBoxPredictor"):
        pooled = tf.reduce_mean(block4, [1, 2])
        slim.fully_connected(pooled, 360, activation_fn=None, scope="BoxEncodingPredictor")
        slim.fully_connected(pooled, 91, activation_fn=None, scope="ClassPredictor")
    return block3, block4


class FasterRCNNReplica:
    def __init__(self, root, depth, size=(64, 80), seed=0):
        rng = np.random.default_rng(seed)
        self.depth, self.name = depth, f"faster_rcnn_resnet{depth}_coco_2018_01_28"
        self.images = rng.uniform(-100, 100, (2, *size, 3)).astype(np.float32)  # RGB minus the means
        self.crops = rng.uniform(0, 2, (2, 7, 7, 1024)).astype(np.float32)
        graph = tf.Graph()
        with graph.as_default():
            images = v1.placeholder(tf.float32, (None, *size, 3))
            crops = v1.placeholder(tf.float32, (None, None, None, 1024))
            block3, block4 = faster_rcnn_replica(images, crops, depth)
            with v1.Session(graph=graph) as session:
                session.run(v1.global_variables_initializer())
                randomise_graph_variables(session, rng, RESNET_GAIN)
                self.block3 = session.run(block3, {images: self.images})
                self.block4 = session.run(block4, {crops: self.crops})
                self.variables = {v.op.name for v in v1.global_variables()}
                self.archive = _save_archive(session, root, self.name)

    def convert(self, output, **kwargs):
        return convert_checkpoint(self.archive, f"resnet_v1_{self.depth}", output, include_top=False,
                                  rules="od_resnet_v1", **kwargs)


@pytest.fixture(scope="module")
def frcnn50(tmp_path_factory):
    return FasterRCNNReplica(tmp_path_factory.mktemp("frcnn50"), 50)


@pytest.fixture(autouse=True)
def fresh_keras():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def _check_faster_rcnn(replica, tmp_path):
    report = replica.convert(tmp_path / "backbone.h5")
    arch = f"resnet_v1_{replica.depth}"
    read = {key for key, *_ in report.mapped}
    # Every backbone variable is read from the right stage, and the first stage's block4 never.
    assert not any(key.startswith(f"FirstStageFeatureExtractor/{arch}/block4/") for key in read)
    assert {k for k in read if "block4" in k} == {
        k for k in replica.variables if k.startswith(f"SecondStageFeatureExtractor/{arch}/block4/")}
    unused = set(report.unused["other"])
    assert {k for k in replica.variables if k.startswith(f"FirstStageFeatureExtractor/{arch}/block4/")} <= unused
    assert {"Conv/weights", "Conv/biases", "FirstStageBoxPredictor/ClassPredictor/weights"} <= unused
    assert read | unused == replica.variables
    for output_stride in (16, 8):
        keras.backend.clear_session()
        first, second = resnet_v1_stages(replica.depth, weights=str(report.output), output_stride=output_stride,
                                         input_shape=replica.images.shape[1:])
        _assert_close(first(replica.images), replica.block3[output_stride], f"block3 at output stride {output_stride}")
    _assert_close(second(replica.crops), replica.block4, "block4 on crops")
    return report


def test_faster_rcnn_resnet50_backbone_matches_replica(frcnn50, tmp_path):
    report = _check_faster_rcnn(frcnn50, tmp_path)
    # 325 replica variables (the reference's count): conv1..block3 (215) + the second stage's block4 (50) are
    # read; the first stage's block4 (50), the RPN (6) and the box classifier (4) are not.
    assert len(frcnn50.variables) == 325
    assert len(report.mapped) == 265 and len(report.unused["other"]) == 60


@pytest.mark.sweep
def test_faster_rcnn_resnet101_backbone_matches_replica(tmp_path):
    _check_faster_rcnn(FasterRCNNReplica(tmp_path, 101, size=(96, 128)), tmp_path)


def test_output_stride_8_needs_the_dilation(frcnn50, tmp_path):
    """At output stride 8, block3 without its rate-2 dilation (strides right, rate 1) is far off."""
    report = frcnn50.convert(tmp_path / "backbone.h5")
    plan = resnet_v1.unit_plan(kzoo.index.get("resnet_v1_50").stages[:3], 8)
    assert {rate for block, _, _, rate in plan if block == 3} == {2}
    inputs = keras.Input(frcnn50.images.shape[1:])
    undilated = keras.Model(inputs, resnet_v1.resnet_v1_blocks(resnet_v1.stem(inputs),
                                                               [(b, u, s, 1) for b, u, s, _ in plan]))
    kzoo.load_weights(undilated, str(report.output), allow_unexpected=True)
    error = _relative_error(undilated(frcnn50.images), frcnn50.block3[8])
    assert error > 100 * RTOL, error


def test_block4_must_come_from_the_second_stage(frcnn50, tmp_path, monkeypatch):
    """Reading block4 from FirstStageFeatureExtractor (present, never trained) gives another block4."""
    monkeypatch.setattr(od_resnet_v1, "SECOND_STAGE_BLOCKS", ())
    convert._plan.cache_clear()
    try:
        report = frcnn50.convert(tmp_path / "first_stage_block4.h5")
    finally:
        convert._plan.cache_clear()
    assert any(key.startswith("FirstStageFeatureExtractor/resnet_v1_50/block4/") for key, *_ in report.mapped)
    _, second = resnet_v1_stages(50, weights=str(report.output), input_shape=frcnn50.images.shape[1:])
    assert _relative_error(second(frcnn50.crops), frcnn50.block4) > 100 * RTOL


def test_prefix_strip_is_needed(frcnn50, tmp_path):
    """The classification rules (no stage prefix) do not recognise a detection checkpoint, and the advice names
    the right detector: Faster R-CNN ResNet-50 and -101 share their head, and block4's depth tells them apart."""
    with pytest.raises(ConversionError, match=r"not a resnet_v1_50 checkpoint.*--model faster_rcnn_resnet50_coco"
                       ) as raised:
        convert_checkpoint(frcnn50.archive, "resnet_v1_50", tmp_path / "x.h5", include_top=False)
    assert "resnet101" not in str(raised.value)
    with pytest.raises(ConversionError, match=r"not a faster_rcnn_resnet101_coco checkpoint \(its variable "
                                              r"'SecondStageFeatureExtractor/resnet_v1_101/block4/.*--model "
                                              r"faster_rcnn_resnet50_coco\."):
        convert_checkpoint(frcnn50.archive, "faster_rcnn_resnet101_coco", tmp_path / "x.h5", include_top=False)
    assert not (tmp_path / "x.h5").exists()


def test_coco_weights_convert_once(frcnn50, tmp_path, monkeypatch):
    """weights="coco": the registry entry's archive from a mirror folder, trusted on first use, converted once
    and cached; the backbone then matches the replica."""
    from kzoo import registry

    entry = registry.resolve_weights("resnet_v1_50", "coco", False)
    assert entry.conversion["rules"] == "od_resnet_v1" and entry.trust == "tofu"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / entry.file_name).write_bytes(frcnn50.archive.read_bytes())
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KZOO_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("KZOO_MIRRORS", str(mirror))
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    features = kzoo.create_model("resnet_v1_50", weights="coco", features_only=True, output_stride=16,
                                 out_indices=(1, 2, 3), input_shape=frcnn50.images.shape[1:])
    assert [info["reduction"] for info in features.feature_info] == [4, 8, 16]
    converted = list((tmp_path / "cache" / "converted").glob("resnet_v1_50-notop-*.h5"))
    assert len(converted) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(convert, "convert_checkpoint", no_conversion)
    first, _ = resnet_v1_stages(50, weights="coco", output_stride=16, input_shape=frcnn50.images.shape[1:])
    _assert_close(first(frcnn50.images), frcnn50.block3[16], "block3 (weights='coco')")


# ------------------------------------------------------------------------------------------------
# SSD InceptionV2
# ------------------------------------------------------------------------------------------------


def ssd_inception_v2_replica(images):
    """The SSD InceptionV2 feature extractor under the detector's conv hyperparameters (ReLU6, BN with gamma,
    eps 1e-3, also on the separable stem), the extra layers, and the 12 box predictor convs."""
    from tf_slim.nets import inception_v2

    hyperparams = slim.arg_scope(
        [slim.conv2d, slim.separable_conv2d], activation_fn=tf.nn.relu6, normalizer_fn=slim.batch_norm,
        normalizer_params={"decay": 0.9997, "center": True, "scale": True, "epsilon": 0.001, "is_training": False})
    with hyperparams, v1.variable_scope("FeatureExtractor"), v1.variable_scope("InceptionV2") as scope:
        _, end_points = inception_v2.inception_v2_base(images, final_endpoint="Mixed_5c", min_depth=16,
                                                       depth_multiplier=1.0, scope=scope)
        maps = [end_points["Mixed_4c"], end_points["Mixed_5c"]]
        for index, depth in ((2, 512), (3, 256), (4, 256), (5, 128)):
            net = slim.conv2d(maps[-1], depth // 2, [1, 1], scope=f"Mixed_5c_1_Conv2d_{index}_1x1_{depth // 2}")
            maps.append(slim.conv2d(net, depth, [3, 3], stride=2, scope=f"Mixed_5c_2_Conv2d_{index}_3x3_s2_{depth}"))
    codes, logits = [], []
    for i, (feature_map, anchors) in enumerate(zip(maps, SSD_ANCHORS)):
        with v1.variable_scope(f"BoxPredictor_{i}"):
            box = slim.conv2d(feature_map, anchors * 4, [3, 3], activation_fn=None, scope="BoxEncodingPredictor")
            cls = slim.conv2d(feature_map, anchors * 91, [3, 3], activation_fn=None, scope="ClassPredictor")
        # ConvolutionalBoxPredictor's reshapes: [N, H * W * anchors, 4] and [N, H * W * anchors, 91]
        codes.append(tf.reshape(box, (tf.shape(box)[0], -1, 4)))
        logits.append(tf.reshape(cls, (tf.shape(cls)[0], -1, 91)))
    return maps, tf.concat(codes, 1), tf.concat(logits, 1)


def _ssd_case(root, size):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        placeholder = v1.placeholder(tf.float32, (None, size, size, 3))
        maps, codes, logits = ssd_inception_v2_replica(placeholder)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            randomise_graph_variables(session, rng)
            expected, box_encodings, class_logits = session.run([maps, codes, logits], {placeholder: images})
            variables = {v.op.name for v in v1.global_variables()}
            archive = _save_archive(session, root, "ssd_inception_v2_coco_2018_01_28", PIPELINE_CONFIG_2018)
    report = convert_checkpoint(archive, "ssd_inception_v2", root / "ssd.h5", include_top=False)
    return SimpleNamespace(images=images, maps=expected, box_encodings=box_encodings, class_logits=class_logits,
                           variables=variables, report=report, archive=archive, root=root)


@pytest.fixture(scope="module")
def ssd(tmp_path_factory):
    return _ssd_case(tmp_path_factory.mktemp("ssd"), 96)


def test_ssd_inception_v2_feature_maps_match_replica(ssd):
    _check_ssd(ssd)


@pytest.mark.sweep
def test_ssd_inception_v2_at_300_matches_replica(tmp_path):
    """The detector's own input size (fixed_shape_resizer 300x300: maps 19, 10, 5, 3, 2, 1)."""
    _check_ssd(_ssd_case(tmp_path, 300))


def _check_ssd(case):
    images, expected, variables, report = case.images, case.maps, case.variables, case.report
    assert len(variables) == 410  # 386 FeatureExtractor/... + 24 BoxPredictor_* (the reference's count)
    read = {key for key, *_ in report.mapped}
    assert read == {v for v in variables if v.startswith("FeatureExtractor/")}
    assert set(report.unused["other"]) == {v for v in variables if v.startswith("BoxPredictor_")}
    model = kzoo.create_model("ssd_inception_v2", weights=str(report.output), input_shape=images.shape[1:])
    outputs = model(images)
    for name, actual, reference in zip(model.output_names, outputs, expected):
        _assert_close(actual, reference, name)


def test_ssd_needs_relu6_and_gamma(ssd):
    """The classification InceptionV2's ReLU (for ReLU6) or a BatchNorm without gamma: far off."""
    images, expected, report = ssd.images, ssd.maps, ssd.report
    model = kzoo.create_model("ssd_inception_v2", weights=str(report.output), input_shape=images.shape[1:])
    for layer in model.layers:
        if layer.name.endswith("_relu6"):
            layer.activation = keras.activations.relu
    assert _relative_error(model(images)[1], expected[1]) > 100 * RTOL
    keras.backend.clear_session()
    model = kzoo.create_model("ssd_inception_v2", weights=str(report.output), input_shape=images.shape[1:])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(np.ones(layer.gamma.shape, "float32"))
    assert _relative_error(model(images)[1], expected[1]) > 100 * RTOL


def test_ssd_features_only_names_the_six_maps():
    model = kzoo.create_model("ssd_inception_v2", weights=None, features_only=True, out_indices=(3, 4, 5, 6, 7, 8))
    assert [info["layer"] for info in model.feature_info][:2] == ["Mixed_4c", "Mixed_5c"]
    assert [tuple(o.shape[1:3]) for o in model.outputs] == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


# ------------------------------------------------------------------------------------------------
# Registry facts
# ------------------------------------------------------------------------------------------------


def test_registry_entries_and_label_map():
    from kzoo import registry

    archives = {e.file_name: e for e in registry.list_weights() if e.tag.startswith("coco")}
    assert set(archives) == {"ssd_inception_v2_coco_2018_01_28.tar.gz", "faster_rcnn_resnet50_coco_2018_01_28.tar.gz",
                             "rfcn_resnet101_coco_2018_01_28.tar.gz", "faster_rcnn_resnet101_coco_11_06_2017.tar.gz"}
    for entry in archives.values():
        assert entry.sha256 is None and entry.size is None and entry.trust == "tofu"  # no source gives them
        assert entry.conversion["detection"]["label_map"]["class_slots"] == 91
    assert archives["faster_rcnn_resnet101_coco_11_06_2017.tar.gz"].conversion["detection"]["pipeline_config"] is None
    # The feature extractor takes [-1, 1] (preprocess_input); the detector scales 0-255 itself.
    assert registry.get_entry("ssd_inception_v2.coco_notop").preprocessing == "tf"
    assert registry.get_entry("ssd_inception_v2_coco.coco_notop").preprocessing == "none"
    assert registry.get_entry("ssd_inception_v2_coco.coco_notop").file_name == archives[
        "ssd_inception_v2_coco_2018_01_28.tar.gz"].file_name
    labels = coco_labels()
    assert len(labels) == 80 and labels[1] == "person" and labels[90] == "toothbrush" and 12 not in labels


# ------------------------------------------------------------------------------------------------
# The SSD detector: config, anchors, heads, post-processing
# ------------------------------------------------------------------------------------------------

# The model block of an ssd_inception_v2_coco pipeline.config as the 2018 archives hold it: no
# override_base_feature_extractor_hyperparams, batch_norm with 'train', trailing commas (tensorflow/models#7411).
PIPELINE_CONFIG_2018 = """# SSD with Inception v2 configuration for MSCOCO Dataset.
model {
  ssd {
    num_classes: 90
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0 width_scale: 5.0 } }
    matcher { argmax_matcher { matched_threshold: 0.5 unmatched_threshold: 0.5 force_match_for_each_row: true } }
    similarity_calculator { iou_similarity { } }
    anchor_generator {
      ssd_anchor_generator {
        num_layers: 6
        min_scale: 0.2
        max_scale: 0.95
        aspect_ratios: 1.0
        aspect_ratios: 2.0
        aspect_ratios: 0.5
        aspect_ratios: 3.0
        aspect_ratios: 0.3333
        reduce_boxes_in_lowest_layer: true
      }
    }
    image_resizer { fixed_shape_resizer { height: 300 width: 300 } }
    box_predictor {
      convolutional_box_predictor {
        min_depth: 0 max_depth: 0 num_layers_before_predictor: 0 use_dropout: false kernel_size: 3
        box_code_size: 4 apply_sigmoid_to_scores: false
        conv_hyperparams { activation: RELU_6, regularizer { l2_regularizer { weight: 0.00004 } } }
      }
    }
    feature_extractor {
      type: 'ssd_inception_v2'
      min_depth: 16
      depth_multiplier: 1.0
      conv_hyperparams {
        activation: RELU_6,
        batch_norm { train: true, scale: true, center: true, decay: 0.9997, epsilon: 0.001, }
      }
    }
    post_processing {
      batch_non_max_suppression {
        score_threshold: 1e-8
        iou_threshold: 0.6
        max_detections_per_class: 100
        max_total_detections: 100
      }
      score_converter: SIGMOID
    }
  }
}
train_config: {
  batch_size: 24
  fine_tune_checkpoint: "PATH_TO_BE_CONFIGURED/model.ckpt"
  from_detection_checkpoint: true
}
"""


def test_pipeline_config_of_2018_reads_as_the_registry_says():
    from kzoo import registry
    from kzoo.detection import pipeline_config
    from kzoo.detection.ssd import ssd_settings

    config = pipeline_config.parse(PIPELINE_CONFIG_2018)
    assert config.get("model.ssd.feature_extractor.conv_hyperparams.batch_norm.train") is True
    assert config.get("model.ssd.feature_extractor.type") == "ssd_inception_v2"
    assert config.get("train_config.fine_tune_checkpoint") == "PATH_TO_BE_CONFIGURED/model.ckpt"
    assert ssd_settings(config) == registry.get_entry("ssd_inception_v2_coco.coco_notop").conversion["detection"]["settings"]
    with pytest.raises(ConversionError, match=r"my\.config: missing '}'"):
        pipeline_config.parse("model { ssd { num_classes: 90 }", "my.config")
    with pytest.raises(ConversionError, match="not an SSD pipeline.config"):
        ssd_settings(pipeline_config.parse("model { faster_rcnn { num_classes: 90 } }"))


def od_anchors(feature_map_sizes, settings):
    """``create_ssd_anchors`` + ``tile_anchors`` composed in TF ops as the Object Detection API does (xy meshgrids,
    centre/size stacks, centre -> corners)."""
    a = settings["anchors"]
    n = a["num_layers"]
    scales = [a["min_scale"] + (a["max_scale"] - a["min_scale"]) * i / (n - 1) for i in range(n)] + [1.0]
    boxes = []
    for layer, (rows, cols) in enumerate(feature_map_sizes):
        if layer == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[layer], r) for r in a["aspect_ratios"]] + [(np.sqrt(scales[layer] * scales[layer + 1]), 1.0)]
        box_scales = tf.constant([s for s, _ in specs], tf.float32)
        ratio_sqrts = tf.sqrt(tf.constant([r for _, r in specs], tf.float32))
        heights, widths = box_scales / ratio_sqrts, box_scales * ratio_sqrts
        y_centers = tf.range(rows, dtype=tf.float32) / rows + 0.5 / rows
        x_centers = tf.range(cols, dtype=tf.float32) / cols + 0.5 / cols
        x_centers, y_centers = tf.meshgrid(x_centers, y_centers)
        widths_grid, x_grid = tf.meshgrid(widths, x_centers)
        heights_grid, y_grid = tf.meshgrid(heights, y_centers)
        centers = tf.reshape(tf.stack([y_grid, x_grid], axis=2), [-1, 2])
        sizes = tf.reshape(tf.stack([heights_grid, widths_grid], axis=2), [-1, 2])
        boxes.append(tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], 1))
    return tf.concat(boxes, 0).numpy()


def od_postprocess(box_encodings, class_logits, anchors, settings):
    """The 2018 API's decode (``FasterRcnnBoxCoder._decode``), sigmoid, and ``multiclass_non_max_suppression``
    (per class: score filter, ``tf.image.non_max_suppression``; then all classes sorted, the best kept), per image."""
    nms, (sy, sx, sh, sw) = settings["nms"], settings["box_coder_scales"]
    ymin, xmin, ymax, xmax = tf.unstack(tf.constant(anchors), axis=1)
    ha, wa = ymax - ymin, xmax - xmin
    yca, xca = ymin + ha / 2, xmin + wa / 2
    results = []
    for codes, logits in zip(box_encodings, class_logits):
        ty, tx, th, tw = tf.unstack(tf.transpose(tf.constant(codes)))
        h, w = tf.exp(th / sh) * ha, tf.exp(tw / sw) * wa
        yc, xc = ty / sy * ha + yca, tx / sx * wa + xca
        boxes = tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
        scores = tf.sigmoid(tf.constant(logits))[:, 1:]
        kept_boxes, kept_scores, kept_classes = [], [], []
        for c in range(scores.shape[1]):
            index = tf.reshape(tf.where(scores[:, c] > nms["score_threshold"]), [-1])
            class_boxes, class_scores = tf.gather(boxes, index), tf.gather(scores[:, c], index)
            selected = tf.image.non_max_suppression(class_boxes, class_scores,
                                                    min(nms["max_detections_per_class"], int(index.shape[0])),
                                                    iou_threshold=nms["iou_threshold"])
            kept_boxes.append(tf.gather(class_boxes, selected))
            kept_scores.append(tf.gather(class_scores, selected))
            kept_classes.append(tf.fill(tf.shape(selected), c + 1))
        scores_all = tf.concat(kept_scores, 0)
        order = tf.argsort(scores_all, direction="DESCENDING", stable=True)[:nms["max_total_detections"]]
        results.append((tf.gather(tf.concat(kept_boxes, 0), order).numpy(), tf.gather(scores_all, order).numpy(),
                        tf.gather(tf.concat(kept_classes, 0), order).numpy()))
    return results


def _canonical(boxes, scores, classes):
    """Detections in one order: random heads saturate many sigmoids to exactly 1.0, and the two NMS compositions
    order equal scores differently."""
    order = np.lexsort((np.round(boxes[:, 1], 3), np.round(boxes[:, 0], 3), classes, -np.round(scores, 4)))
    return boxes[order], scores[order], classes[order]


def _assert_same_detections(kzoo_out, reference):
    for i, (boxes, scores, classes) in enumerate(reference):
        n = int(np.asarray(kzoo_out["num_detections"])[i])
        assert n == len(scores) > 0
        actual = _canonical(np.asarray(kzoo_out["detection_boxes"])[i, :n],
                            np.asarray(kzoo_out["detection_scores"])[i, :n],
                            np.asarray(kzoo_out["detection_classes"])[i, :n])
        boxes, scores, classes = _canonical(boxes, scores, classes)
        np.testing.assert_array_equal(actual[2], classes)
        np.testing.assert_allclose(actual[1], scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(actual[0], boxes, rtol=1e-5, atol=1e-5)


def _ssd_detector(ssd, **kwargs):
    return kzoo.create_model("ssd_inception_v2_coco", input_shape=ssd.images.shape[1:],
                             pipeline_config=PIPELINE_CONFIG_2018, **kwargs)


def _to_pixels(images):
    return (images + 1.0) * 127.5  # the detector scales 0-255 to [-1, 1] itself


@pytest.fixture(scope="module")
def ssd_detector_h5(ssd):
    report = convert_checkpoint(ssd.archive, "ssd_inception_v2_coco", ssd.root / "detector.h5", include_top=False)
    assert len(report.mapped) == 410 and not report.unused  # every tensor of the archive is read
    return report.output


def test_ssd_anchors_match_the_api(ssd):
    from kzoo.detection.ssd import ssd_anchors

    settings = kzoo.detection.ssd.ssd_settings(kzoo.detection.pipeline_config.parse(PIPELINE_CONFIG_2018))
    sizes = [m.shape[1:3] for m in ssd.maps]
    anchors = ssd_anchors(sizes, settings, image_size=ssd.images.shape[1:3])
    assert anchors.shape == (ssd.box_encodings.shape[1], 4)
    np.testing.assert_allclose(anchors, od_anchors(sizes, settings), atol=1e-6)
    full = ssd_anchors([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], settings)
    assert full.shape == (1917, 4)  # the 300x300 detector's anchor count
    np.testing.assert_allclose(full, od_anchors([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], settings),
                               atol=1e-6)


def test_ssd_heads_and_detections_match_replica(ssd, ssd_detector_h5):
    """Raw heads within 1e-5 of the replica's; kzoo's post-processing on the replica's heads equals the API's
    composition; and the whole detector gives the same boxes, classes and scores."""
    from kzoo.detection.ssd import postprocess, ssd_anchors

    raw = _ssd_detector(ssd, weights=str(ssd_detector_h5), postprocess=False)
    outputs = raw(_to_pixels(ssd.images))
    _assert_close(outputs["box_encodings"], ssd.box_encodings, "box encodings")
    _assert_close(outputs["class_logits"], ssd.class_logits, "class logits")

    settings = raw.detection_settings
    anchors = ssd_anchors([m.shape[1:3] for m in ssd.maps], settings, image_size=ssd.images.shape[1:3])
    reference = od_postprocess(ssd.box_encodings, ssd.class_logits, anchors, settings)
    _assert_same_detections(postprocess(tf.constant(ssd.box_encodings), tf.constant(ssd.class_logits), anchors,
                                        settings), reference)
    keras.backend.clear_session()
    detector = _ssd_detector(ssd, weights=str(ssd_detector_h5))
    _assert_same_detections(detector(_to_pixels(ssd.images)), reference)


def test_one_anchor_fires_and_its_box_lands_where_it_belongs():
    """Zero kernels; biases make exactly one anchor (the last map's 1x1 cell, box 0: scale 0.95, ratio 1, centred)
    score class 18 ("dog") and encode a chosen box. The codes are the Faster R-CNN coder's inverse by hand."""
    detector = kzoo.create_model("ssd_inception_v2_coco", weights=None, input_shape=(96, 96, 3),
                                 pipeline_config=PIPELINE_CONFIG_2018)
    for layer in detector.layers:
        if layer.name.startswith("BoxPredictor_") and isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            bias[:] = -30.0 if layer.name.endswith("ClassPredictor") else 0.0
            layer.set_weights([np.zeros_like(kernel), bias])
    target = np.array([0.2, 0.3, 0.6, 0.9])  # ymin, xmin, ymax, xmax
    (yc, xc), (h, w), anchor = (target[:2] + target[2:]) / 2, target[2:] - target[:2], 0.95
    codes = [10 * (yc - 0.5) / anchor, 10 * (xc - 0.5) / anchor, 5 * np.log(h / anchor), 5 * np.log(w / anchor)]
    box_layer, class_layer = (detector.get_layer(f"BoxPredictor_5_{kind}")
                              for kind in ("BoxEncodingPredictor", "ClassPredictor"))
    kernel, bias = box_layer.get_weights()
    bias[:4] = codes
    box_layer.set_weights([kernel, bias])
    kernel, bias = class_layer.get_weights()
    bias[18] = 10.0  # box 0, slot 18
    class_layer.set_weights([kernel, bias])

    out = detector(np.random.default_rng(0).uniform(0, 255, (1, 96, 96, 3)).astype("float32"))
    assert int(out["num_detections"][0]) == 1
    assert int(out["detection_classes"][0, 0]) == 18 and coco_labels()[18] == "dog"
    np.testing.assert_allclose(float(out["detection_scores"][0, 0]), 1 / (1 + np.exp(-10.0)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["detection_boxes"][0, 0]), target, atol=1e-5)


def test_ssd_detector_coco_weights_read_the_archives_config(ssd, tmp_path, monkeypatch):
    """weights="coco": the archive is converted once for the detector, and its own pipeline.config (here with
    max_total_detections 50, not the registry's 100) sets the post-processing."""
    import tarfile

    from kzoo import registry

    entry = registry.resolve_weights("ssd_inception_v2_coco", "coco", False)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    config = PIPELINE_CONFIG_2018.replace("max_total_detections: 100", "max_total_detections: 50")
    (tmp_path / "pipeline.config").write_text(config)
    with tarfile.open(ssd.archive) as source, tarfile.open(mirror / entry.file_name, "w:gz", compresslevel=1) as tar:
        for member in source:
            if member.name.endswith("/pipeline.config"):
                tar.add(str(tmp_path / "pipeline.config"), arcname=member.name)
            else:
                tar.addfile(member, source.extractfile(member))
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KZOO_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("KZOO_MIRRORS", str(mirror))
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    detector = kzoo.create_model("ssd_inception_v2_coco", weights="coco", input_shape=ssd.images.shape[1:])
    assert detector.detection_settings["nms"]["max_total_detections"] == 50
    assert len(list((tmp_path / "cache" / "converted").glob("ssd_inception_v2_coco-notop-*.h5"))) == 1
    out = detector(_to_pixels(ssd.images))
    assert tuple(out["detection_boxes"].shape) == (2, 50, 4)
    from kzoo.detection.ssd import ssd_anchors

    settings = detector.detection_settings
    anchors = ssd_anchors([m.shape[1:3] for m in ssd.maps], settings, image_size=ssd.images.shape[1:3])
    _assert_same_detections(out, od_postprocess(ssd.box_encodings, ssd.class_logits, anchors, settings))


def test_new_class_count_keeps_all_but_the_class_heads(ssd, ssd_detector_h5):
    """Fine-tuning to 37 classes (the pets recipe): the 12 ClassPredictor tensors are re-initialised and named,
    everything else is kept -- the box encoders still give the replica's codes."""
    detector = _ssd_detector(ssd, weights=str(ssd_detector_h5), postprocess=False, num_classes=37)
    report = detector.weights_report
    assert sorted(report["reinitialised"]) == sorted(f"BoxPredictor_{i}_ClassPredictor/{w}"
                                                     for i in range(6) for w in ("kernel", "bias"))
    assert len(report["kept"]) == len(detector.weights) - 12
    outputs = detector(_to_pixels(ssd.images))
    assert tuple(outputs["class_logits"].shape) == (2, ssd.class_logits.shape[1], 38)
    _assert_close(outputs["box_encodings"], ssd.box_encodings, "box encodings (37 classes)")


def test_fine_tune_to_one_class_trains_and_finds_the_square(ssd, ssd_detector_h5):
    """Seed 003's recipe in miniature: the COCO detector rebuilt for 1 class, feature extractor frozen, trained on
    4 synthetic images (a bright square on noise) for 20 steps; the loss must fall to under a third, the
    best-scoring anchor of a training image must be one matched to its square, and its decoded box must overlap
    the square with IoU >= 0.5 and better than the anchor itself (the box encoders learned to refine)."""
    import tensorflow as tf

    from kzoo.detection.ssd import anchor_box_specs, ssd_anchors
    from kzoo.detection.training import anchor_targets, encode_boxes, iou, ssd_loss

    size = ssd.images.shape[1]
    keras.utils.set_random_seed(0)
    model = _ssd_detector(ssd, weights=str(ssd_detector_h5), postprocess=False, num_classes=1)
    settings = model.detection_settings
    grid = [m.shape[1:3] for m in ssd.maps]
    anchors = ssd_anchors(grid, settings, image_size=(size, size))
    assert len(anchors) == sum(r * c * len(s) for (r, c), s in zip(grid, anchor_box_specs(settings)))
    # encode_boxes inverts the detector's decoding
    some = anchors[:5] + 0.05
    np.testing.assert_allclose(np.asarray(kzoo.detection.ssd.decode_boxes(
        tf.constant(encode_boxes(some, anchors[:5], settings["box_coder_scales"])), anchors[:5],
        settings["box_coder_scales"])), some, atol=1e-5)

    rng = np.random.default_rng(1)

    def sample():
        side = rng.uniform(0.35, 0.6)
        y, x = rng.uniform(0, 1 - side, 2)
        box = np.array([[y, x, y + side, x + side]])
        image = rng.uniform(0, 60, (size, size, 3))
        y0, x0, y1, x1 = (box[0] * size).round().astype(int)
        image[y0:y1, x0:x1] = 230
        return image.astype("float32"), box

    images, boxes = zip(*(sample() for _ in range(4)))
    targets = [anchor_targets(anchors, b, [1], 1, settings["box_coder_scales"]) for b in boxes]
    class_t, box_t, matched = (np.stack(t) for t in zip(*targets))
    for layer in model.layers:
        layer.trainable = layer.name.startswith("BoxPredictor_")
    # The box encoders start at zero codes (the anchors themselves) and take smaller steps than the class heads:
    # from Keras' default start on the random replica's large features, their smooth L1 does not settle in 20 steps.
    box_layers = [layer for layer in model.layers if layer.name.startswith("BoxPredictor_")
                  and layer.name.endswith("_BoxEncodingPredictor")]
    for layer in box_layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    box_weights = [w for layer in box_layers for w in layer.trainable_weights]
    class_weights = [w for w in model.trainable_weights if all(w is not b for b in box_weights)]
    optimizers = ((keras.optimizers.Adam(3e-3), class_weights), (keras.optimizers.Adam(3e-4), box_weights))
    x = tf.constant(np.stack(images))

    def step():
        with tf.GradientTape() as tape:
            out = model(x, training=False)
            loss = ssd_loss(class_t, box_t, matched, out["class_logits"], out["box_encodings"])
        grads = tape.gradient(loss, class_weights + box_weights)
        optimizers[0][0].apply_gradients(zip(grads[:len(class_weights)], class_weights))
        optimizers[1][0].apply_gradients(zip(grads[len(class_weights):], box_weights))
        return float(loss)

    losses = [step() for _ in range(20)]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < losses[0] / 3

    out = model(x[:1])
    scores = keras.ops.convert_to_numpy(keras.ops.sigmoid(out["class_logits"]))[0, :, 1]
    best = scores.argmax()
    decoded = np.asarray(kzoo.detection.ssd.decode_boxes(out["box_encodings"][0, best:best + 1], anchors[best:best + 1],
                                                         settings["box_coder_scales"]))
    anchor_iou, box_iou = iou(anchors[best][None], boxes[0])[0, 0], iou(decoded, boxes[0])[0, 0]
    print(f"best anchor matched {matched[0, best]}, anchor IoU {anchor_iou:.2f}, box IoU {box_iou:.2f}")
    # the trained box encoder moved its anchor towards the square (not just a matched anchor left as it was)
    assert matched[0, best] and box_iou >= 0.5 and box_iou > anchor_iou + 0.05


# ------------------------------------------------------------------------------------------------
# Second-stage crops (Faster R-CNN, R-FCN)
# ------------------------------------------------------------------------------------------------

# Boxes inside, across the edge (extrapolated), flipped (y1 > y2) and degenerate.
CROP_BOXES = np.array([[0.1, 0.2, 0.7, 0.9], [-0.2, 0.5, 0.6, 1.3], [0.8, 0.7, 0.2, 0.1], [0.3, 0.3, 0.3, 0.6],
                       [0.0, 0.0, 1.0, 1.0]], np.float32)


@pytest.mark.parametrize("crop_size", [(14, 14), (7, 5), (1, 1)])
def test_crop_and_resize_is_tensorflows(crop_size):
    from kzoo.detection.crops import crop_and_resize

    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (2, 9, 13, 6)).astype(np.float32)
    indices = np.array([0, 1, 1, 0, 1], np.int32)
    expected = tf.image.crop_and_resize(features, CROP_BOXES, indices, crop_size, extrapolation_value=0.0).numpy()
    actual = np.asarray(crop_and_resize(features, CROP_BOXES, indices, crop_size))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0.1


def od_position_sensitive_crop(features, boxes, indices, crop_size, bins, global_pool):
    """``position_sensitive_crop_regions`` composed from tf.image.crop_and_resize as the API composes it."""
    bins_y, bins_x = bins
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    step_y, step_x = (ymax - ymin) / bins_y, (xmax - xmin) / bins_x
    cells = [tf.stack([ymin + by * step_y, xmin + bx * step_x, ymin + (by + 1) * step_y, xmin + (bx + 1) * step_x],
                      axis=1) for by in range(bins_y) for bx in range(bins_x)]
    splits = tf.split(features, bins_y * bins_x, axis=3)
    crops = [tf.image.crop_and_resize(s, c, indices, [crop_size[0] // bins_y, crop_size[1] // bins_x])
             for s, c in zip(splits, cells)]
    if global_pool:
        return tf.reduce_mean(tf.add_n(crops) / len(crops), [1, 2], keepdims=True).numpy()
    rows = [tf.concat(crops[r * bins_x:(r + 1) * bins_x], axis=2) for r in range(bins_y)]
    return tf.concat(rows, axis=1).numpy()


@pytest.mark.parametrize("global_pool", [True, False])
def test_position_sensitive_crop_is_the_apis(global_pool):
    """R-FCN ResNet-101's setting: 3x3 bins, 18x18 crops (6x6 per bin), 91 x 4 box channels per bin here cut to 5."""
    from kzoo.detection.crops import position_sensitive_crop

    rng = np.random.default_rng(1)
    features = rng.normal(0, 1, (2, 11, 15, 9 * 5)).astype(np.float32)
    indices = np.array([0, 1, 1, 0, 1], np.int32)
    expected = od_position_sensitive_crop(features, CROP_BOXES, indices, (18, 18), (3, 3), global_pool)
    actual = np.asarray(position_sensitive_crop(features, CROP_BOXES, indices, (18, 18), (3, 3), global_pool))
    assert actual.shape == expected.shape == ((5, 1, 1, 5) if global_pool else (5, 18, 18, 5))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)  # values ~1: float32 rounding
    # the bins read different channel groups: a plain crop of the same boxes is something else
    plain = tf.image.crop_and_resize(features[..., :5], CROP_BOXES, indices, (18, 18)).numpy()
    if global_pool:
        plain = plain.mean(axis=(1, 2), keepdims=True)
    assert np.abs(plain - expected).max() > 1e-2
