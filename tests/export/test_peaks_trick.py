"""centerX's ``==``-free peak mask (``peaks_only``) against the exact ``==`` mask, in PyTorch and
in onnxruntime, including plateaus, the documented leak bound and the fp16 pitfall."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from percepta.errors import CheckpointError
from percepta.export.onnx import peaks_only
from percepta.export.runtime import OnnxPredictor

LEAK_BOUND = 0.0042  # max over h of h * (1 - 1e9 * ulp(h)) >= leaked value, see onnx.py


def _eq_peaks(heat: torch.Tensor) -> torch.Tensor:
    """Independent reference: keep a pixel iff it equals its 3x3 max (official ctdet _nms)."""
    return heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()


def _maps(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 48, 40, generator=g) * 3 - 3  # realistic sigmoid(score) spread
    heat = torch.sigmoid(logits)
    heat[0, 0, 9:14, 9:14] = 0.5
    heat[0, 0, 10:13, 10:13] = 0.75  # a plateau: every tied pixel is kept by both forms
    heat[1, 2, :, :4] = 0.0  # zeros at the border
    return heat


class _PeaksModule(torch.nn.Module):
    def forward(self, heat: torch.Tensor) -> torch.Tensor:
        return peaks_only(heat)


def test_peaks_only_equals_eq_mask_above_the_leak_scale():
    heat = _maps()
    ours, ref = peaks_only(heat), _eq_peaks(heat)
    strong = heat >= 2**-6
    # Above the leak scale the same pixels are peaks (exact) with the same values: bit-identical
    # on the machines we know, asserted to 1e-6 relative (float32 kernels may differ by an ulp
    # between CPUs; a leak or a lost peak is >= 2^-6, far above that).
    assert torch.equal(ours[strong] > 0, ref[strong] > 0)
    torch.testing.assert_close(ours[strong], ref[strong], rtol=1e-6, atol=0)
    assert float((ours - ref).abs().max()) <= LEAK_BOUND
    torch.testing.assert_close(
        ours[0, 0, 10:13, 10:13], torch.full((3, 3), 0.75), rtol=1e-6, atol=0
    )
    assert int((ref > 0).sum()) > 50


def test_leak_happens_and_stays_under_the_bound():
    """Two neighbours one ulp apart at h ~ 0.0084 (difference < 1e-9): the smaller one leaks."""
    h = torch.tensor(0.0084)
    up = torch.nextafter(h, torch.tensor(1.0))
    heat = torch.zeros(1, 1, 5, 5)
    heat[0, 0, 2, 2], heat[0, 0, 2, 3] = h, up
    ours, ref = peaks_only(heat), _eq_peaks(heat)
    assert float(ref[0, 0, 2, 2]) == 0.0 and 0.0 < float(ours[0, 0, 2, 2]) <= LEAK_BOUND
    assert float(ours[0, 0, 2, 3]) == float(up)


def test_fp16_pitfall_is_avoided():
    heat = _maps(1)[:, :, :16, :16]
    half = heat.half()
    naive = half * (torch.relu(half - F.max_pool2d(half, 3, 1, 1) + 1e-9) * 1e9)
    assert torch.isnan(naive).any() or not torch.equal(naive.float(), _eq_peaks(half.float()))
    ours = peaks_only(half)  # computed in float32
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    # same code on the same fp32 input (half upcast inside or here): 1e-6 relative
    torch.testing.assert_close(ours, peaks_only(half.float()), rtol=1e-6, atol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_peaks_only_in_onnxruntime_matches_pytorch(tmp_path):
    path = tmp_path / "peaks_only.onnx"
    heat = _maps(2)
    torch.onnx.export(
        _PeaksModule(),
        (heat,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["heat"],
        output_names=["peaks"],
        dynamic_axes={"heat": {0: "b", 2: "h", 3: "w"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (heat, _maps(3)[:, :, :20, :33]):
        (got,) = sess.run(None, {"heat": x.numpy()})
        # onnxruntime's kernels vs PyTorch's: the same peak sets (exact), values within 1e-6
        # relative (bit-identical where we measured, but float32 kernels differ between CPUs)
        want = peaks_only(x).numpy()
        np.testing.assert_array_equal(got > 0, want > 0)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
        strong = (x >= 2**-6).numpy()
        ref = _eq_peaks(x).numpy()[strong]
        np.testing.assert_array_equal(got[strong] > 0, ref > 0)
        np.testing.assert_allclose(got[strong], ref, rtol=1e-6, atol=0)
    # a graph without percepta metadata is not accepted by the predictor
    with pytest.raises(CheckpointError, match="not a percepta ONNX export"):
        OnnxPredictor(path)
    with pytest.raises(CheckpointError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match="cannot load ONNX model"):
        OnnxPredictor(tmp_path / "junk.onnx")
