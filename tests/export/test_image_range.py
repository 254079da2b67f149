"""torchvision's image convention (uint8 = 0-255, float = 0-1) in the PyTorch CenterNet, in the
exported ONNX graph and in OnnxPredictor: ``img`` and ``img / 255`` give the same predictions.

Tolerances: the two inputs differ only by float32 rounding of ``v / 255 * 255`` (<= 1 ulp), so
matched detections must agree within 1e-3 px (boxes) and 1e-5 (scores), labels exactly.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from percepta.errors import DataError
from percepta.export.runtime import OnnxPredictor

BOX_TOL, SCORE_TOL = 1e-3, 1e-5


def _assert_same(a: list[dict], b: list[dict], min_detections: int = 5) -> None:
    """Per image: same number of detections; each one of ``a`` has a partner in ``b`` with the
    same label, box within BOX_TOL and score within SCORE_TOL (paired greedily by box distance,
    which is unambiguous at these tolerances)."""
    assert len(a) == len(b)
    total = 0
    for pa, pb in zip(a, b):
        assert len(pa["scores"]) == len(pb["scores"])
        total += len(pa["scores"])
        free = list(range(len(pb["scores"])))
        for box, score, label in zip(pa["boxes"], pa["scores"], pa["labels"]):
            dist = [
                float((box - pb["boxes"][j]).abs().max())
                if pb["labels"][j] == label
                else float("inf")
                for j in free
            ]
            k = min(range(len(free)), key=dist.__getitem__)
            j = free.pop(k)
            assert dist[k] <= BOX_TOL, (box, pb["boxes"][j])
            assert abs(float(score) - float(pb["scores"][j])) <= SCORE_TOL
    assert total >= min_detections


def _float_images(images: list[torch.Tensor]) -> list[torch.Tensor]:
    return [im.float() / 255.0 for im in images]


def test_pytorch_uint8_equals_float_over_255(peaky_model, sample_images):
    with torch.no_grad():
        as_uint8 = peaky_model(sample_images)  # list of 3 sizes: resize + pad paths
        as_float = peaky_model(_float_images(sample_images))
        square = torch.stack([sample_images[0], sample_images[0].flip(-1)])  # no-resize path
        sq_uint8 = peaky_model(square)
        sq_float = peaky_model(square.float() / 255.0)
    _assert_same(as_uint8, as_float, 10)
    _assert_same(sq_uint8, sq_float, 10)


def test_float_image_with_0_255_values_is_refused(peaky_model, sample_images):
    with pytest.raises(DataError, match="0-1.*divide them by 255"):
        peaky_model([sample_images[0].float()])
    with pytest.raises(DataError, match="0-1"):
        peaky_model(sample_images[0].float()[None])
    with pytest.raises(DataError, match="int32"):
        peaky_model([sample_images[0].to(torch.int32)])


def test_onnx_uint8_equals_float_over_255_and_pytorch(
    peaky_model, predictor_full, onnx_peaks, sample_images
):
    floats = _float_images(sample_images)
    with torch.no_grad():
        ref = peaky_model(sample_images)
    for predictor in (predictor_full, OnnxPredictor(onnx_peaks)):
        as_uint8 = predictor(sample_images)
        _assert_same(as_uint8, predictor(floats), 10)
        _assert_same(ref, as_uint8, 10)  # the graph follows the same rule as the model


def test_exported_graph_takes_float_0_1(peaky_model, onnx_full, predictor_full, sample_images):
    """The raw graph input is the letterboxed canvas in 0-1: fed that, it returns what the
    PyTorch heads + decode return on the 0-255 canvas; the metadata says so."""
    from percepta.detection.centernet_decode import decode

    meta = {p.key: p.value for p in onnx.load(str(onnx_full)).metadata_props}
    assert (meta["input_dtype"], meta["input_range"]) == ("float32", "0-1")
    canvas, _, _ = peaky_model.preprocess(sample_images[:1])  # 0-255
    out = predictor_full.run_graph(canvas / 255.0)
    with torch.no_grad():
        heads = peaky_model.forward_heads(canvas)
        dets = decode(heads["heat"], heads["wh"], heads["reg"], k=100)
    scores = torch.from_numpy(out["scores"][0])
    assert torch.allclose(scores, dets[0, :, 4], atol=SCORE_TOL)
    strong = scores > 0.05
    assert int(strong.sum()) >= 5
    boxes = torch.from_numpy(out["boxes"][0])[strong]
    assert torch.allclose(boxes, dets[0, strong, :4] * peaky_model.stride, atol=BOX_TOL)


def test_export_without_input_range_is_fed_0_255(peaky_model, onnx_full, sample_images, tmp_path):
    """Exports written before the ``input_range`` key took 0-255: the predictor feeds them the
    unscaled canvas. Such a graph is made here from the current one by dividing its input by
    255 first, and the metadata key is removed."""
    proto = onnx.load(str(onnx_full))
    for node in proto.graph.node:
        node.input[:] = ["images_0_1" if name == "images" else name for name in node.input]
    proto.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array(255.0, dtype=np.float32), "k255")
    )
    proto.graph.node.insert(0, onnx.helper.make_node("Div", ["images", "k255"], ["images_0_1"]))
    keep = [p for p in proto.metadata_props if p.key != "input_range"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.checker.check_model(proto)
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    predictor = OnnxPredictor(old)
    assert predictor.metadata["input_range"] == "0-255"
    with torch.no_grad():
        ref = peaky_model(sample_images)
    _assert_same(ref, predictor(sample_images), 10)
    _assert_same(ref, predictor(_float_images(sample_images)), 10)
