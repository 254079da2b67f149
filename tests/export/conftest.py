"""Fixtures for the ONNX export tests: one small, peaky CenterNet (ResNet-18, 128 px, 3 classes),
its checkpoint in the engine's format, and its two exports, built once per session.

A freshly initialised CenterNet has an almost flat heat map (sigmoid(-2.19 + ~1e-3 noise)), so
its top-K is decided by float noise and no two runtimes agree on it. "Peaky" here means
deterministic, seeded weights with realistic statistics: BatchNorm running stats are calibrated
on built-in-style images (one forward pass in training mode with cumulative averaging), then the
last convs of the heads are rescaled so that logits lie within about -10..2 (bias -4, largest
deviation 6 on the calibration images), sizes have std 3 map cells (bias 6) and offsets std 0.2
(bias 0.5). That gives tens of well separated peaks per image. Logits far above ~16 would make
the sigmoid saturate to plateaus of equal scores whose membership depends on the runtime's last
ulp, which no parity check can pin (a trained detector does not produce them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

INPUT_SIZE = 128
CLASS_NAMES = ["circle", "square", "triangle"]


def _make_peaky(model: torch.nn.Module, images: list[torch.Tensor]) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        x, _, _ = model.preprocess(images)
        model.forward_heads(x)
    model.eval()
    with torch.no_grad():
        feat = model.neck(model.backbone((x - model.pixel_mean) / model.pixel_std))
        cls = model.head.cls
        logits = cls(feat)
        cls[-1].weight.mul_(6.0 / (logits - logits.mean()).abs().max())
        cls[-1].bias.fill_(-4.0)  # logits within about -10..2: peaks, no saturated plateaus
        for branch, std, bias in ((model.head.wh, 3.0, 6.0), (model.head.reg, 0.2, 0.5)):
            branch[-1].weight.mul_(std / branch(feat).std())
            branch[-1].bias.fill_(bias)


@pytest.fixture(scope="session")
def detection_config():
    from percepta import config

    return config.load(
        None,
        [
            "name=export_test",
            "task=detection",
            "model.name=centernet",
            "model.backbone=resnet18",
            f"model.input_size={INPUT_SIZE}",
            "model.num_classes=3",
            f"model.class_names=[{','.join(CLASS_NAMES)}]",
        ],
    )


@pytest.fixture(scope="session")
def sample_images() -> list[torch.Tensor]:
    """Built-in-style images: a square one and two of other aspect ratios (uint8)."""
    from percepta.export.onnx import parity_images

    return parity_images(INPUT_SIZE, n=3, seed=1)


@pytest.fixture(scope="session")
def peaky_model(detection_config, sample_images):
    from percepta.engine.build import build_model

    torch.manual_seed(0)
    model = build_model(detection_config)
    _make_peaky(model, sample_images)
    return model.eval()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, detection_config, peaky_model) -> Path:
    """The peaky model written in the engine's checkpoint format (``save_checkpoint``)."""
    import percepta
    from percepta import config
    from percepta.engine.checkpoint import FORMAT, VERSION, save_checkpoint

    state = {
        "format": FORMAT,
        "version": VERSION,
        "percepta_version": percepta.__version__,
        "task": "detection",
        "config": config.to_dict(detection_config),
        "model": peaky_model.state_dict(),
        "iteration": 10,
    }
    return save_checkpoint(state, tmp_path_factory.mktemp("ckpt") / "last.pt")


@pytest.fixture(scope="session")
def onnx_full(tmp_path_factory, peaky_model) -> Path:
    from percepta.export.onnx import export_onnx

    return export_onnx(
        peaky_model,
        tmp_path_factory.mktemp("onnx") / "full.onnx",
        decode="full",
        top_k=100,
        opset=17,
    )


@pytest.fixture(scope="session")
def peaks_export(tmp_path_factory, checkpoint) -> dict:
    """``export_checkpoint(..., decode="peaks", check=False)``'s return value."""
    from percepta.export.onnx import export_checkpoint

    return export_checkpoint(
        checkpoint,
        tmp_path_factory.mktemp("onnx") / "peaks.onnx",
        decode="peaks",
        top_k=100,
        opset=17,
        check=False,
    )


@pytest.fixture(scope="session")
def onnx_peaks(peaks_export) -> Path:
    return Path(peaks_export["path"])


@pytest.fixture(scope="session")
def predictor_full(onnx_full):
    from percepta.export.runtime import OnnxPredictor

    return OnnxPredictor(onnx_full)
