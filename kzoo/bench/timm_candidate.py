"""The timm baseline: the same architecture in PyTorch, run with the settings of the Keras candidates."""

from __future__ import annotations

import contextlib
import sys

from kzoo.bench.candidate import MODES, PRECISIONS, Candidate
from kzoo.bench.flops import count_torch_macs
from kzoo.bench.measure import prepare_with_backoff

# timm names of the same architectures (timm's resnet50 is v1.5: stride in the 3x3, no conv bias).
TIMM_NAMES = {
    "resnet50": "resnet50", "resnet101": "resnet101", "resnet152": "resnet152",
    "mobilenetv2": "mobilenetv2_100", "mobilenetv3large": "mobilenetv3_large_100",
    "mobilenetv3small": "mobilenetv3_small_100", "efficientnetb0": "efficientnet_b0",
    "efficientnetb1": "efficientnet_b1", "efficientnetb2": "efficientnet_b2",
    "efficientnetb3": "efficientnet_b3", "inceptionv3": "inception_v3", "vgg16": "vgg16",
    "vgg19": "vgg19", "xception": "legacy_xception", "densenet121": "densenet121",
    "densenet169": "densenet169", "densenet201": "densenet201", "convnexttiny": "convnext_tiny",
    "convnextsmall": "convnext_small", "convnextbase": "convnext_base",
    "inceptionresnetv2": "inception_resnet_v2", "nasnetlarge": "nasnetalarge",
    "efficientnetv2s": "tf_efficientnetv2_s", "efficientnetv2m": "tf_efficientnetv2_m",
}


def timm_import_problem() -> str | None:
    """Why importing timm now would be unsafe or impossible, or None when it is fine.

    TensorFlow and triton (torch's GPU compiler, which torch imports as timm loads) each bundle LLVM;
    importing triton *after* TensorFlow segfaults the process (TF 2.21 + triton 3.8). The CLI imports
    timm before Keras, which is safe; a process that already holds TensorFlow must not try.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("timm") is None:
        return "timm or torch is not installed (pip install torch timm to add it)"
    if ("tensorflow" in sys.modules and "triton" not in sys.modules
            and importlib.util.find_spec("triton") is not None):
        return ("TensorFlow is already imported and triton is installed: importing triton after "
                "TensorFlow crashes the process; import timm first (as `kzoo bench` does) or "
                "uninstall triton (torch needs it only for torch.compile on CUDA)")
    return None


def timm_available() -> bool:
    """torch and timm import (and are imported now, so a later TensorFlow import is safe)."""
    if timm_import_problem():
        return False
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_timm_step(name: str, batch_size: int, mode="infer", jit=False, precision="float32",
                   image_size=None, seed=0):
    """timm's equivalent model as ``(step, model)``: the same settings as the Keras candidates.

    * channels_last weights and input (the layout Keras uses; torch's fast CPU/GPU conv path);
    * the same precision: float32, or autocast to bf16/fp16 for the mixed policies (with a grad
      scaler for fp16 training on CUDA, as Keras' LossScaleOptimizer); on CUDA float32 matmuls and
      convs may use TF32, because TensorFlow and JAX do by default;
    * ``torch.compile`` only when ``jit`` (eager otherwise, like a Keras run without XLA);
    * every step ends with ``cuda.synchronize`` on a GPU (CPU ops are synchronous);
    * ``image_size`` (int or (h, w)) should be the Keras model's, so both see the same pixels;
      None falls back to timm's own default.
    ``mode="train"``: one SGD step (lr 1e-4, momentum 0.9) of cross-entropy on random labels.
    """
    import timm
    import torch

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and precision == "float32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = timm.create_model(TIMM_NAMES[name], pretrained=False)
    size = image_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    model = model.to(device).to(memory_format=torch.channels_last)
    model.kzoo_image_size = size  # read back by Timm.prepare for the result row
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch_size, 3, *size), generator=gen).to(device).contiguous(
        memory_format=torch.channels_last)
    autocast_dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(precision)
    autocast = (
        (lambda: torch.autocast(device_type=device, dtype=autocast_dtype))
        if autocast_dtype else contextlib.nullcontext
    )
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if mode == "infer":
        model.eval()
        run = torch.compile(model) if jit else model

        def step():
            with torch.inference_mode(), autocast():
                out = run(x)
            sync()
            return out

        return step, model
    model.train()
    num_classes = int(getattr(model, "num_classes", 1000))
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device, enabled=precision == "mixed_float16" and device == "cuda")
    run = torch.compile(model) if jit else model

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(run(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        value = loss.item()  # a host copy: the step has finished, on any device
        sync()
        return value

    return train_step, model


class Timm(Candidate):
    """The baseline: timm's model of the same architecture (:data:`TIMM_NAMES`), in torch."""

    name = "timm"
    baseline = True
    framework = "torch"
    plot_style = ":x"

    @classmethod
    def problem(cls):
        return timm_import_problem()

    @classmethod
    def available(cls):
        return timm_available()

    def prepare(self, model_name, batch_size, result, shared_size=None):
        if not self.available():
            raise LookupError("timm/torch not installed")
        if model_name not in TIMM_NAMES:
            raise LookupError(f"no timm equivalent for {model_name!r}")
        built = {}

        def make_step(batch):
            step, built["model"] = make_timm_step(model_name, batch, self.mode, self.jit, self.precision,
                                                  shared_size)
            return step

        prepared = prepare_with_backoff(make_step, batch_size, log=self.log)
        model = built["model"]
        result.image_size = tuple(model.kzoo_image_size)
        result.params = sum(p.numel() for p in model.parameters())
        result.gflops_per_image = 2 * count_torch_macs(model, (3, *result.image_size)) / 1e9
        return prepared
