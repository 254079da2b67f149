"""ONNX export of CenterNet: checker, metadata, decode inside the graph, parity with PyTorch,
dynamic batch/size, uint8/float inputs, refusals, and the `percepta export` command."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from percepta import cli
from percepta.errors import CheckpointError
from percepta.export.onnx import (
    DetectionGraph,
    ExportError,
    check_parity,
    export_checkpoint,
    export_onnx,
)
from percepta.export.runtime import OnnxPredictor, compare_predictions

CLASS_NAMES = ["circle", "square", "triangle"]  # as in conftest.py
INPUT_SIZE = 128
SHARED_DATA = Path(
    os.environ.get(
        "PERCEPTA_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)


def _as_dicts(boxes, scores, labels, threshold: float) -> list[dict[str, torch.Tensor]]:
    """Per-image dicts of the detections scoring above ``threshold`` (as postprocess keeps)."""
    boxes, scores, labels = (torch.as_tensor(np.asarray(v)) for v in (boxes, scores, labels))
    return [
        {"boxes": b[s > threshold], "scores": s[s > threshold], "labels": lab[s > threshold]}
        for b, s, lab in zip(boxes, scores, labels)
    ]


def _assert_ok(parity: dict, min_detections: int = 1) -> None:
    assert parity["ok"], str(parity)
    assert parity["labels_equal"], parity
    assert parity["max_box_diff"] <= 1e-3 and parity["max_score_diff"] <= 1e-5, parity
    assert parity["detections"] >= min_detections, parity


def test_checker_metadata_and_graph_contents(onnx_full, onnx_peaks):
    proto = onnx.load(str(onnx_full))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == CLASS_NAMES
    assert (meta["input_size"], meta["stride"], meta["top_k"], meta["decode"]) == (
        str(INPUT_SIZE),
        "4",
        "100",
        "full",
    )
    assert (
        meta["task"] == "detection"
        and meta["percepta_version"]
        and meta["input_dtype"] == "float32"
    )
    # the whole decode is in the graph: peak picking, top-K, gathering
    ops = {n.op_type for n in proto.graph.node}
    assert {"MaxPool", "Equal", "TopK", "GatherElements", "Sigmoid", "Conv"} <= ops
    (inp,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    outs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert outs == {
        "boxes": onnx.TensorProto.FLOAT,
        "scores": onnx.TensorProto.FLOAT,
        "labels": onnx.TensorProto.INT64,
    }

    peaks = onnx.load(str(onnx_peaks))
    onnx.checker.check_model(peaks)
    assert [o.name for o in peaks.graph.output] == ["heat_peaks", "reg", "wh"]
    assert {p.key: p.value for p in peaks.metadata_props}["decode"] == "peaks"
    assert "TopK" not in {n.op_type for n in peaks.graph.node}


def test_parity_batch_1_and_2(peaky_model, onnx_full, predictor_full, sample_images):
    _assert_ok(check_parity(peaky_model, onnx_full, sample_images[:1]), 5)
    _assert_ok(check_parity(peaky_model, predictor_full, sample_images[:2]), 10)  # list, 2 sizes
    stacked = torch.stack([sample_images[0], sample_images[0].flip(-1)])
    _assert_ok(check_parity(peaky_model, predictor_full, stacked), 10)  # tensor [2,3,S,S]
    # the predictor returns the model's own dict layout and types
    pred = predictor_full(sample_images[:2])
    assert len(pred) == 2 and pred[0]["labels"].dtype == torch.int64
    h, w = sample_images[1].shape[1:]
    assert (
        float(pred[1]["boxes"][:, 0::2].max()) <= w and float(pred[1]["boxes"][:, 1::2].max()) <= h
    )
    assert float(pred[1]["scores"].min()) > peaky_model.score_threshold


def test_dynamic_axes_two_sizes(peaky_model, onnx_full, predictor_full):
    """The raw graph against the PyTorch forward + decode at two canvas sizes and batch sizes."""
    from percepta.data.synthetic.detection import render_image

    predictor = predictor_full
    graph = DetectionGraph(peaky_model, 100).eval()
    big = torch.from_numpy(render_image(3, 0, 160).image).permute(2, 0, 1).float() / 255
    for x in (big[None, :, :128, :128], torch.stack([big[:, :64, :96], big.flip(-1)[:, 96:, 64:]])):
        out = predictor.run_graph(x)
        assert out["boxes"].shape == (x.shape[0], 100, 4) and out["labels"].dtype == np.int64
        with torch.no_grad():
            ref = graph(x)
        t = peaky_model.score_threshold
        res = compare_predictions(
            _as_dicts(*ref, t),
            _as_dicts(out["boxes"], out["scores"], out["labels"], t),
            score_threshold=t,
            top_k=100,
        )
        _assert_ok(res, 10 * x.shape[0])
    # the predictor letterboxing into another canvas = the model with that input_size
    other = OnnxPredictor(onnx_full, input_size=96)
    images = [big, big[:, :100, :]]
    saved = peaky_model.input_size
    peaky_model.input_size = 96
    try:
        with torch.no_grad():
            ref = peaky_model(images)
    finally:
        peaky_model.input_size = saved
    res = compare_predictions(ref, other(images), score_threshold=peaky_model.score_threshold)
    _assert_ok(res, 10)


def test_uint8_and_float_inputs(peaky_model, predictor_full, sample_images):
    predictor = predictor_full
    as_uint8 = predictor(sample_images)
    as_float = predictor([im.float() / 255 for im in sample_images])
    for a, b in zip(as_uint8, as_float):
        assert torch.equal(a["labels"], b["labels"])  # labels: exact
        # the same graph on the same machine (uint8 is cast to float inside it): 1e-6 relative
        for k in ("boxes", "scores"):
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)
    assert sample_images[0].dtype == torch.uint8
    floats = [im.float() / 255 for im in sample_images]  # torchvision's float convention
    _assert_ok(check_parity(peaky_model, predictor, floats), 10)


def test_peaks_output_is_the_eq_mask_times_heat(peaky_model, onnx_peaks, sample_images):
    """`--decode peaks`: heat * keep from onnxruntime = heat * (maxpool(heat) == heat) in PyTorch."""
    predictor = OnnxPredictor(onnx_peaks)
    x, _, _ = peaky_model.preprocess(sample_images)
    out = predictor.run_graph(x / 255)  # the exported graph takes 0-1 floats
    with torch.no_grad():
        heads = peaky_model.forward_heads(x)
    heat = heads["heat"]
    ref = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()
    ort = torch.from_numpy(out["heat_peaks"])
    assert ort.shape == ref.shape
    strong = (ref > 0.01) | (ort > 0.01)  # above the score threshold the peak sets must agree
    assert torch.equal(ref[strong] > 0, ort[strong] > 0)
    assert int((ref > 0.01).sum()) >= 20
    assert float((ort - ref)[strong].abs().max()) <= 1e-5
    assert float((ort - ref).abs().max()) < 0.005  # leaks/flips only far below any threshold
    for name in ("reg", "wh"):
        assert float((torch.from_numpy(out[name]) - heads[name]).abs().max()) <= 1e-4
    # and the predictor decoding those maps on the host gives the model's detections
    _assert_ok(check_parity(peaky_model, onnx_peaks, sample_images), 10)


@pytest.mark.shared_data
def test_parity_on_tiny_coco(peaky_model, predictor_full):
    from torchvision.io import read_image

    folder = SHARED_DATA / "tiny_coco" / "val2017"
    if not folder.is_dir():
        pytest.skip(f"shared dataset not found at {folder} (set PERCEPTA_SHARED_DATA)")
    images = [read_image(str(p)) for p in sorted(folder.glob("*.jpg"))[:3]]
    assert all(im.shape[0] == 3 and im.shape[1:] != (INPUT_SIZE, INPUT_SIZE) for im in images)
    _assert_ok(check_parity(peaky_model, predictor_full, images), 10)


def test_deformable_model_refused(tmp_path, peaky_model, monkeypatch):
    from percepta.detection.centernet import CenterNetConfig, build_centernet

    deform = build_centernet(
        CenterNetConfig(
            num_classes=2, input_size=64, deform=True, neck_channels=[32, 16, 8], head_conv=8
        )
    )
    with pytest.raises(ExportError, match="deformable"):
        export_onnx(deform, tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()
    # the config flag alone is enough
    monkeypatch.setattr(peaky_model, "config", dataclasses.replace(peaky_model.config, deform=True))
    with pytest.raises(ExportError, match="model.deform=false"):
        export_onnx(peaky_model, tmp_path / "e.onnx")
    assert not list(tmp_path.glob("*.onnx"))


def test_deformable_checkpoint_refused_before_building(checkpoint, tmp_path):
    from percepta.engine.checkpoint import save_checkpoint

    state = torch.load(checkpoint, weights_only=True)
    state["config"]["model"]["deform"] = True  # weights would not even fit: refused first
    bad = save_checkpoint(state, tmp_path / "dcn.pt")
    with pytest.raises(ExportError, match=f"checkpoint {bad}.*deformable"):
        export_checkpoint(bad, tmp_path / "d.onnx")


def test_non_detection_checkpoint_and_bad_options_refused(checkpoint, tmp_path):
    from percepta.engine.checkpoint import save_checkpoint

    state = torch.load(checkpoint, weights_only=True)
    state["task"] = "quality"
    other = save_checkpoint(state, tmp_path / "quality.pt")
    with pytest.raises(CheckpointError, match="'quality'"):
        export_checkpoint(other, tmp_path / "q.onnx")
    with pytest.raises(ExportError, match="opset 9"):
        export_checkpoint(checkpoint, tmp_path / "o.onnx", opset=9)
    with pytest.raises(ExportError, match="top_k"):
        export_checkpoint(checkpoint, tmp_path / "k.onnx", top_k=5000)
    assert not list(tmp_path.glob("*.onnx"))


def test_cli_export_end_to_end(checkpoint, tmp_path, capsys, sample_images):
    out = tmp_path / "exported" / "model.onnx"
    assert (
        cli.main(
            [
                "export",
                str(checkpoint),
                "--format",
                "onnx",
                "--out",
                str(out),
                "--top-k",
                "50",
                "--opset",
                "17",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "onnx.checker: ok" in text and "-> ok" in text, text
    predictor = OnnxPredictor(out)
    assert predictor.top_k == 50 and predictor.class_names == CLASS_NAMES
    assert 0 < max(len(p["scores"]) for p in predictor(sample_images)) <= 50
    # a user error is one line on stderr with exit code 2
    assert cli.main(["export", str(checkpoint), "--out", str(out), "--opset", "9"]) == 2
    assert "error: opset 9" in capsys.readouterr().err


def test_export_checkpoint_return_value(peaks_export, onnx_peaks):
    info = peaks_export
    assert info["parity"] is None and info["decode"] == "peaks" and info["size_mb"] > 1
    assert info["path"] == str(onnx_peaks) and info["opset"] == 17 and info["top_k"] == 100
