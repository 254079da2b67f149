"""CenterNet decode: official ``ctdet_decode`` vectors, an independent numpy decoder, and
hand-made heat maps whose detections are worked out by hand.

Classes, positions and orders are compared exactly; box coordinates with ``rtol=1e-6`` (float32
box assembly, 8 ulps); scores with ``rel=1e-6`` although they are copies of heat-map values.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.detection import centernet
from percepta.detection.centernet_decode import decode

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "centernet"


def _canonical(rows) -> torch.Tensor:
    """Rows sorted by (-score, class, x1, y1, x2, y2) on rounded keys, so that the order of
    tied scores (implementation-defined in top-K) does not matter."""
    rows = [list(map(float, r)) for r in rows]
    rows.sort(key=lambda r: (-round(r[4], 5), round(r[5]), *(round(v, 3) for v in r[:4])))
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)


def _assert_same_rows(got, want) -> None:
    a, b = _canonical(got), _canonical(want)
    assert a.shape == b.shape
    assert torch.equal(a[:, 5], b[:, 5])  # classes (small integers stored as float): exact
    # float32 box assembly x + off -/+ w/2: 1e-6 relative (8 float32 ulps) plus 1e-6 absolute
    # for coordinates that are ~0; scores are copies of heat values (1e-6 relative).
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=1e-6, atol=1e-6)


def test_official_ctdet_decode_exact() -> None:
    ref = json.loads((FIX / "decode_basic.json").read_text())
    inp, exp = ref["inputs"], ref["expected"]
    dets = decode(
        torch.tensor(inp["heat"]),
        torch.tensor(inp["wh"]),
        torch.tensor(inp["reg"]),
        k=inp["K"],
        cat_spec_wh=inp["cat_spec_wh"],
    )
    want = torch.tensor(exp["detections"])
    assert dets.shape == want.shape and dets.dtype == torch.float32
    for b in range(dets.shape[0]):
        _assert_same_rows(dets[b].tolist(), want[b].tolist())
    # scores come out sorted like the official top-K (copied heat values: rel 1e-6)
    torch.testing.assert_close(dets[..., 4], torch.tensor(exp["topk_scores"]), rtol=1e-6, atol=0)
    assert torch.equal(dets[..., 5].long(), torch.tensor(exp["topk_clses"]))  # classes: exact


def test_reexported_from_centernet_module() -> None:
    assert centernet.decode is decode


def _numpy_decode(
    heat: np.ndarray, wh: np.ndarray, reg: np.ndarray | None, k: int, cat_spec_wh: bool
) -> list[list[tuple]]:
    """Independent decoder: loop over pixels, keep local 3x3 maxima, global sort, pick k."""
    b, c, h, w = heat.shape
    out = []
    for i in range(b):
        cands = []
        for cl in range(c):
            for y in range(h):
                for x in range(w):
                    v = heat[i, cl, y, x]
                    win = heat[i, cl, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
                    if v == win.max():
                        cands.append((v, cl, y, x))
        cands.sort(key=lambda t: -t[0])
        rows = []
        for v, cl, y, x in cands[:k]:
            cx = x + (reg[i, 0, y, x] if reg is not None else np.float32(0.5))
            cy = y + (reg[i, 1, y, x] if reg is not None else np.float32(0.5))
            sw, sh = (
                (wh[i, 2 * cl, y, x], wh[i, 2 * cl + 1, y, x])
                if cat_spec_wh
                else (wh[i, 0, y, x], wh[i, 1, y, x])
            )
            row = (cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2, v, np.float32(cl))
            rows.append(tuple(float(np.float32(r)) for r in row))
        out.append(rows)
    return out


@pytest.mark.parametrize("cat_spec_wh,with_reg", [(False, False), (True, True)])
def test_decode_matches_independent_decoder(cat_spec_wh: bool, with_reg: bool) -> None:
    g = torch.Generator().manual_seed(5)
    b, c, h, w, k = 2, 3, 9, 11, 15
    heat = torch.rand(b, c, h, w, generator=g)
    heat[0, 1, 2:4, 3:5] = 1.0  # a 2x2 plateau (rand < 1): every tied pixel survives peak picking
    wh = torch.rand(b, 2 * c if cat_spec_wh else 2, h, w, generator=g) * 8
    reg = torch.rand(b, 2, h, w, generator=g) if with_reg else None
    dets = decode(heat, wh, reg, k=k, cat_spec_wh=cat_spec_wh)
    ref = _numpy_decode(
        heat.numpy(), wh.numpy(), None if reg is None else reg.numpy(), k, cat_spec_wh
    )
    for i in range(b):
        _assert_same_rows(dets[i].tolist(), ref[i])
    assert (dets[0, :4, 4] == 1.0).all()  # the four tied plateau pixels (stored 1.0, copied)


# ------------------------------------------------------------------ hand-made heat maps
def _hand_maps(cat_spec_wh: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image, 2 classes, 4x5 map. Peaks (value = its 3x3 max, per class):

    class 0: 0.9 at (y0,x0) -- its neighbour 0.8 at (y0,x1) is suppressed by the max pool;
             a tie 0.5 / 0.5 at (y3,x1) and (y3,x2) -- both kept; 0.3 at (y1,x4).
    class 1: 0.7 at (y1,x1) -- next to class 0's 0.9, but pooling is per class: kept;
             0.6 at (y2,x4).
    Every other pixel is 0 (either suppressed or a zero "peak" of an empty window).
    """
    heat = torch.zeros(1, 2, 4, 5)
    for (c, y, x), v in {
        (0, 0, 0): 0.9,
        (0, 0, 1): 0.8,
        (0, 3, 1): 0.5,
        (0, 3, 2): 0.5,
        (0, 1, 4): 0.3,
        (1, 1, 1): 0.7,
        (1, 2, 4): 0.6,
    }.items():
        heat[0, c, y, x] = v
    reg = torch.zeros(1, 2, 4, 5)
    wh = torch.zeros(1, 4 if cat_spec_wh else 2, 4, 5)
    # (y, x): offset (ox, oy), size (w, h)
    for (y, x), off, size in (
        ((0, 0), (0.25, 0.75), (2.0, 4.0)),
        ((1, 1), (0.5, 0.5), (1.0, 1.0)),
        ((2, 4), (0.125, 0.25), (3.0, 2.0)),
        ((3, 1), (0.0, 0.0), (2.0, 2.0)),
        ((3, 2), (0.875, 0.375), (4.0, 1.0)),
        ((1, 4), (0.25, 0.25), (1.0, 2.0)),
        ((0, 1), (0.5, 0.5), (8.0, 8.0)),
    ):  # the suppressed pixel
        reg[0, :, y, x] = torch.tensor(off)
        wh[0, :2, y, x] = torch.tensor(size)
        if cat_spec_wh:  # class 1's channels; class 0's (wrong for class 1) stay as above
            wh[0, 2:, y, x] = torch.tensor(size)
    if cat_spec_wh:
        wh[0, :2, 1, 1] = 9.0  # class 0 size at class 1's peak: must not be used
        wh[0, 2:, 0, 0] = 9.0  # class 1 size at class 0's peak: must not be used
    return heat, wh, reg


# By hand: centre (x + ox, y + oy); box (cx - w/2, cy - h/2, cx + w/2, cy + h/2).
HAND_ROWS = [
    (-0.75, -1.25, 1.25, 2.75, 0.9, 0),  # c0 (0,0): centre (0.25, 0.75), 2x4
    (1.0, 1.0, 2.0, 2.0, 0.7, 1),  # c1 (1,1): centre (1.5, 1.5), 1x1
    (2.625, 1.25, 5.625, 3.25, 0.6, 1),  # c1 (2,4): centre (4.125, 2.25), 3x2
    (0.0, 2.0, 2.0, 4.0, 0.5, 0),  # c0 (3,1): centre (1, 3), 2x2
    (0.875, 2.875, 4.875, 3.875, 0.5, 0),  # c0 (3,2): centre (2.875, 3.375), 4x1
    (3.75, 0.25, 4.75, 2.25, 0.3, 0),  # c0 (1,4): centre (4.25, 1.25), 1x2
]


@pytest.mark.parametrize("cat_spec_wh", [False, True])
def test_hand_made_peaks_give_the_boxes_worked_out_by_hand(cat_spec_wh: bool) -> None:
    heat, wh, reg = _hand_maps(cat_spec_wh)
    dets = decode(heat, wh, reg, k=6, cat_spec_wh=cat_spec_wh)
    assert dets.shape == (1, 6, 6)
    _assert_same_rows(dets[0].tolist(), HAND_ROWS)
    # sorted by score; the suppressed 0.8 never appears
    assert dets[0, :, 4].tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5, 0.5, 0.3], rel=1e-6)
    assert dets[0, :, 5].tolist() == [0, 1, 1, 0, 0, 0]  # class per rank: exact


def test_top_k_cut_keeps_the_k_best_peaks() -> None:
    heat, wh, reg = _hand_maps()
    dets = decode(heat, wh, reg, k=5)  # drops the 0.3 peak (and every zero)
    _assert_same_rows(dets[0].tolist(), HAND_ROWS[:5])
    dets = decode(heat, wh, reg, k=3)  # the 0.5 tie lies beyond the cut
    _assert_same_rows(dets[0].tolist(), HAND_ROWS[:3])
    assert dets[0, :, 5].tolist() == [0, 1, 1]


def test_without_offsets_the_centre_is_the_pixel_centre() -> None:
    heat, wh, _ = _hand_maps()
    dets = decode(heat, wh, None, k=2)
    # c0 (0,0): centre (0.5, 0.5), 2x4; c1 (1,1): centre (1.5, 1.5), 1x1
    _assert_same_rows(
        dets[0].tolist(), [(-0.5, -1.5, 1.5, 2.5, 0.9, 0), (1.0, 1.0, 2.0, 2.0, 0.7, 1)]
    )


def test_images_of_a_batch_are_decoded_independently() -> None:
    heat, wh, reg = _hand_maps()
    other = torch.zeros(1, 2, 4, 5)
    other[0, 1, 2, 2] = 0.95  # a stronger peak in image 1 must not displace image 0's rows
    dets = decode(torch.cat([heat, other]), wh.repeat(2, 1, 1, 1), reg.repeat(2, 1, 1, 1), k=3)
    _assert_same_rows(dets[0].tolist(), HAND_ROWS[:3])
    assert dets[1, 0, 5].item() == 1 and dets[1, 0, 4].item() == pytest.approx(0.95, rel=1e-6)
    assert dets[1, 1:, 4].tolist() == [0.0, 0.0]  # nothing else in image 1 is a non-zero peak


def test_k_is_capped_by_map_size() -> None:
    """2x3 map, 2 classes: K per class is capped at 6 and the final K at 2 x 6 = 12 rows."""
    heat = torch.zeros(1, 2, 2, 3)
    heat[0, 0, 0] = torch.tensor([0.2, 0.1, 0.05])  # 0.1 and 0.05 lie in 0.2's window
    heat[0, 1, 1, 2] = 0.7
    dets = decode(heat, torch.ones(1, 2, 2, 3), None, k=100)
    assert dets.shape == (1, 12, 6)
    assert dets[0, :2, 4].tolist() == pytest.approx([0.7, 0.2], rel=1e-6)
    assert dets[0, :2, 5].tolist() == [1, 0]
    assert dets[0, 2:, 4].tolist() == [0.0] * 10  # every other pixel: suppressed or zero
    # the two real peaks: centres (2.5, 1.5) and (0.5, 0.5), 1x1 boxes
    torch.testing.assert_close(
        dets[0, :2, :4],
        torch.tensor([[2.0, 1.0, 3.0, 2.0], [0.0, 0.0, 1.0, 1.0]]),
        rtol=1e-6,
        atol=1e-6,
    )


def test_decode_exports_to_onnx_exactly(tmp_path) -> None:
    """Tensor ops only: the traced graph (TorchScript exporter, fast) gives identical rows."""
    ort = pytest.importorskip("onnxruntime")
    ref = json.loads((FIX / "decode_basic.json").read_text())["inputs"]
    heat, wh, reg = (torch.tensor(ref[key]) for key in ("heat", "wh", "reg"))

    class Decode(torch.nn.Module):
        def forward(self, heat, wh, reg):
            return decode(heat, wh, reg, k=ref["K"])

    path = tmp_path / "decode.onnx"
    with warnings.catch_warnings():  # tracer/deprecation chatter only
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Decode(),
            (heat, wh, reg),
            str(path),
            opset_version=18,
            dynamo=False,
            input_names=["heat", "wh", "reg"],
        )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"heat": heat.numpy(), "wh": wh.numpy(), "reg": reg.numpy()})
    want = decode(heat, wh, reg, k=ref["K"]).numpy()
    # onnxruntime's kernels vs torch's: the same rows in the same order; classes exact, floats
    # within 1e-6 relative (float32 box arithmetic in another library)
    np.testing.assert_array_equal(out[..., 5], want[..., 5])
    np.testing.assert_allclose(out[..., :5], want[..., :5], rtol=1e-6, atol=1e-6)
