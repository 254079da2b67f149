"""CenterNet decode: official ``ctdet_decode`` vectors (exact) and an independent numpy decoder."""

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


def _rows_as_set_by_score(dets: torch.Tensor) -> list[tuple[float, frozenset]]:
    """Group rows by score so that exactly tied scores compare as a set."""
    groups: dict[float, set] = {}
    for row in dets.tolist():
        groups.setdefault(row[4], set()).add(tuple(row))
    return sorted(((s, frozenset(r)) for s, r in groups.items()), key=lambda x: -x[0])


def test_official_ctdet_decode_exact() -> None:
    ref = json.loads((FIX / "decode_basic.json").read_text())
    inp, exp = ref["inputs"], ref["expected"]
    dets = decode(torch.tensor(inp["heat"]), torch.tensor(inp["wh"]), torch.tensor(inp["reg"]),
                  k=inp["K"], cat_spec_wh=inp["cat_spec_wh"])
    want = torch.tensor(exp["detections"])
    assert dets.shape == want.shape and dets.dtype == torch.float32
    for b in range(dets.shape[0]):
        assert _rows_as_set_by_score(dets[b]) == _rows_as_set_by_score(want[b])
    # scores come out sorted like the official top-K
    assert torch.equal(dets[..., 4], torch.tensor(exp["topk_scores"]))
    assert torch.equal(dets[..., 5].long(), torch.tensor(exp["topk_clses"]))


def test_reexported_from_centernet_module() -> None:
    assert centernet.decode is decode


def _numpy_decode(heat: np.ndarray, wh: np.ndarray, reg: np.ndarray | None, k: int,
                  cat_spec_wh: bool) -> list[set]:
    """Independent decoder: loop over pixels, keep local 3x3 maxima, global sort, pick k."""
    b, c, h, w = heat.shape
    out = []
    for i in range(b):
        cands = []
        for cl in range(c):
            for y in range(h):
                for x in range(w):
                    v = heat[i, cl, y, x]
                    win = heat[i, cl, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
                    if v == win.max():
                        cands.append((v, cl, y, x))
        cands.sort(key=lambda t: -t[0])
        rows = set()
        for v, cl, y, x in cands[:k]:
            cx = x + (reg[i, 0, y, x] if reg is not None else np.float32(0.5))
            cy = y + (reg[i, 1, y, x] if reg is not None else np.float32(0.5))
            sw, sh = (wh[i, 2 * cl, y, x], wh[i, 2 * cl + 1, y, x]) if cat_spec_wh else \
                (wh[i, 0, y, x], wh[i, 1, y, x])
            row = (cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2, v, np.float32(cl))
            rows.add(tuple(float(np.float32(r)) for r in row))
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
    ref = _numpy_decode(heat.numpy(), wh.numpy(), None if reg is None else reg.numpy(), k, cat_spec_wh)
    for i in range(b):
        assert set(map(tuple, dets[i].tolist())) == ref[i]
    assert (dets[0, :4, 4] == 1.0).all()  # the four tied plateau pixels


def test_k_is_capped_by_map_size() -> None:
    heat = torch.rand(1, 2, 2, 3)
    dets = decode(heat, torch.ones(1, 2, 2, 3), None, k=100)
    assert dets.shape[0] == 1 and dets.shape[2] == 6 and dets.shape[1] <= 12
    assert (dets[0, :, 4] >= 0).all()


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
        torch.onnx.export(Decode(), (heat, wh, reg), str(path), opset_version=18, dynamo=False,
                          input_names=["heat", "wh", "reg"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"heat": heat.numpy(), "wh": wh.numpy(), "reg": reg.numpy()})
    assert np.array_equal(out, decode(heat, wh, reg, k=ref["K"]).numpy())
