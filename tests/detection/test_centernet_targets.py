"""CenterNet target generation: official reference vectors and an independent per-object loop.

What training consumes as integers (integer radius, flat index ``ind``, the 0/1 ``mask``, slot
counts) is compared exactly. Float values are compared with stated tolerances: the
implementation follows the official dtypes (radius in float64 for the CenterNet formula, float32
for centerX's; Gaussian in float64 stored as float32; centre cast to float32), but vectorised
kernels (FMA contraction, SIMD ``exp``/``sqrt`` paths) differ by an ulp between x86-64 CPUs
(e.g. Intel vs AMD), so bit-for-bit float equality only holds on the machine that made the
reference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.detection.centernet_targets import build_targets, gaussian_radius

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "centernet"


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads((FIX / "targets_and_losses.json").read_text())


# --------------------------------------------------------------------------- official vectors
EPS32 = float(np.finfo(np.float32).eps)


def test_radius_table(ref: dict) -> None:
    table = ref["expected"]["radius_table"]
    hw = torch.tensor(table["sizes_hw"], dtype=torch.float64)
    bug = gaussian_radius(hw[:, 0], hw[:, 1], 0.7, "centernet")
    # float64 and the bug version adds the square root (b + sqrt(...)): no cancellation, so a
    # few float64 ulps (rel 1e-12) is ample on any CPU.
    torch.testing.assert_close(
        bug,
        torch.tensor(table["centernet_bug_version_min_overlap_0.7"], dtype=torch.float64),
        rtol=1e-12,
        atol=0,
    )
    ceil_hw = torch.ceil(hw)  # ctdet.py passes ceil(h), ceil(w) and truncates
    used = gaussian_radius(ceil_hw[:, 0], ceil_hw[:, 1], 0.7, "centernet").clamp(min=0).long()
    assert used.tolist() == table["centernet_int_radius_as_used_in_ctdet"]  # ints: exact
    hw32 = hw.float()
    side_sum = hw.sum(dim=1)
    for o in (0.7, 0.3):
        fixed = gaussian_radius(hw32[:, 0], hw32[:, 1], o, "centerx")
        want = torch.tensor(table[f"centerX_min_overlap_{o}"], dtype=torch.float64)
        assert fixed.dtype == torch.float32
        # The corrected roots are (b - sqrt(b^2 - 4ac)) / 2a with b ~ h + w: the subtraction
        # cancels, so a one-ulp difference in b^2 or sqrt (FMA / SIMD paths differ between
        # CPUs) becomes an absolute error of ~ulp(h + w) in r, i.e. a relative error of
        # eps32 * (h + w) / r (5e-7 for the 8x20 box on Intel). Allow 4 float32 ulps of h + w.
        err = (fixed.double() - want).abs()
        assert bool((err <= 4 * EPS32 * side_sum).all()), (o, err.tolist())
        # The integer radius training uses must not depend on the CPU: exact, and well defined
        # (no reference radius lies within the float tolerance of an integer boundary).
        assert fixed.clamp(min=0).long().tolist() == want.clamp(min=0).long().tolist()
        frac = want - want.floor()
        near_int = (frac < 4 * EPS32 * side_sum) | (1 - frac < 4 * EPS32 * side_sum)
        assert not bool((near_int & (want > 0.5)).any())


def test_heatmap_and_slots_exact(ref: dict) -> None:
    inp, exp = ref["inputs"], ref["expected"]
    boxes = torch.tensor(inp["boxes_output_coords_xyxy"], dtype=torch.float64)
    _, h, w = inp["heatmap_shape_CHW"]
    tg = build_targets(
        [boxes],
        [torch.zeros(len(boxes), dtype=torch.long)],
        1,
        (h, w),
        max_objs=inp["max_objs"],
        radius_formula="centernet",
        min_overlap=inp["min_overlap"],
    )
    expected_heat = torch.tensor(exp["gt_heatmap"], dtype=torch.float64)
    assert tg["heatmap"].dtype == torch.float32
    # Gaussian = exp() in float64 stored as float32: the CPU's exp may differ by a float64 ulp,
    # which can flip the float32 rounding by one ulp (rel 6e-8); allow 1e-6 relative.
    torch.testing.assert_close(tg["heatmap"][0].double(), expected_heat, rtol=1e-6, atol=1e-12)
    # centres are exp(0) = 1 exactly on every CPU: the count of ones is exact
    assert int((tg["heatmap"] == 1).sum()) == exp["num_exact_ones_in_heatmap"]
    assert tg["num_objects"] == len(exp["per_object"])
    for k, obj in enumerate(exp["per_object"]):
        assert tg["radius"][0, k].item() == obj["radius"]  # int
        assert tg["ind"][0, k].item() == obj["ind"]  # int
        # reg = ct - floor(ct) in float32 (official dtype): one float32 ulp of the centre
        # (ct < 32 on this 24x32 map, ulp <= 3.8e-6) bounds any CPU difference; abs 1e-5.
        assert tg["reg"][0, k].tolist() == pytest.approx(obj["reg"], abs=1e-5)
        # official wh array is float32: the reference stores the float64 difference; float32
        # storage rounds at rel 6e-8, allow 1e-6 relative.
        assert tg["wh"][0, k].tolist() == pytest.approx(obj["wh"], rel=1e-6)
        assert tg["mask"][0, k].item() == 1  # 0/1 flag
    assert tg["mask"][0, len(exp["per_object"]) :].sum() == 0


# ---------------------------------------------------------------- independent reference loop
def _radius_loop(h: float, w: float, o: float, formula: str) -> int:
    if formula == "centernet":  # CornerNet bug version, float64, on ceil'd sizes
        h, w = math.ceil(h), math.ceil(w)
        roots = []
        for a, b, c in (
            (1, h + w, w * h * (1 - o) / (1 + o)),
            (4, 2 * (h + w), (1 - o) * w * h),
            (4 * o, -2 * o * (h + w), (o - 1) * w * h),
        ):
            roots.append((b + math.sqrt(b * b - 4 * a * c)) / 2)
        r = min(roots)
    else:  # corrected roots in float32 scalars
        f = np.float32
        h32, w32 = f(h), f(w)
        b1 = h32 + w32
        c1 = w32 * h32 * f(1 - o) / f(1 + o)
        r1 = (b1 - np.sqrt(b1 * b1 - f(4) * c1)) / f(2)
        b2 = f(2) * (h32 + w32)
        c2 = f(1 - o) * w32 * h32
        r2 = (b2 - np.sqrt(b2 * b2 - f(16) * c2)) / f(8)
        a3 = f(4 * o)
        b3 = f(-2 * o) * (h32 + w32)
        c3 = f(o - 1) * w32 * h32
        r3 = (b3 + np.sqrt(b3 * b3 - f(4) * a3 * c3)) / (f(2) * a3)
        r = float(min(r1, r2, r3))
    return int(max(0.0, r))


def _targets_loop(
    boxes: list[np.ndarray],
    labels: list[np.ndarray],
    c: int,
    h: int,
    w: int,
    max_objs: int,
    o: float,
    formula: str,
) -> dict[str, np.ndarray]:
    """Straightforward per-object port of ctdet.py + draw_umich_gaussian (numpy)."""
    b = len(boxes)
    heat = np.zeros((b, c, h, w), np.float32)
    wh = np.zeros((b, max_objs, 2), np.float32)
    reg = np.zeros((b, max_objs, 2), np.float32)
    ind = np.zeros((b, max_objs), np.int64)
    mask = np.zeros((b, max_objs), np.float32)
    for i in range(b):
        for k in range(min(len(boxes[i]), max_objs)):
            x1, y1, x2, y2 = (float(v) for v in boxes[i][k])
            x1, x2 = min(max(x1, 0.0), w - 1), min(max(x2, 0.0), w - 1)
            y1, y2 = min(max(y1, 0.0), h - 1), min(max(y2, 0.0), h - 1)
            bh, bw = y2 - y1, x2 - x1
            if bh <= 0 or bw <= 0:
                continue
            r = _radius_loop(bh, bw, o, formula)
            ct = np.array([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float32)
            cx, cy = ct.astype(np.int32)
            d = 2 * r + 1
            sigma = d / 6
            yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
            g = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
            g[g < np.finfo(g.dtype).eps * g.max()] = 0
            left, right = min(cx, r), min(w - cx, r + 1)
            top, bottom = min(cy, r), min(h - cy, r + 1)
            hm = heat[i, labels[i][k], cy - top : cy + bottom, cx - left : cx + right]
            np.maximum(hm, g[r - top : r + bottom, r - left : r + right], out=hm)
            wh[i, k] = bw, bh
            reg[i, k] = ct - np.array([cx, cy], np.float32)
            ind[i, k] = cy * w + cx
            mask[i, k] = 1
    return {"heatmap": heat, "wh": wh, "reg": reg, "ind": ind, "mask": mask}


@pytest.mark.parametrize(
    "formula,overlap", [("centernet", 0.7), ("centerx", 0.3), ("centerx", 0.7)]
)
def test_batched_targets_equal_per_object_loop(formula: str, overlap: float) -> None:
    g = torch.Generator().manual_seed(3)
    h, w, c, max_objs = 30, 41, 4, 12
    counts = [7, 0, 15, 3]  # an empty image and one with more boxes than slots
    boxes, labels = [], []
    for n in counts:
        xy = (
            torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([w + 6.0, h + 6.0])
            - 3
        )
        size = torch.rand(n, 2, generator=g, dtype=torch.float64) * 22 - 1  # some degenerate
        bx = torch.cat([xy, xy + size], dim=1)
        if n:
            bx[0] = torch.tensor([5.0, 5.0, 9.0, 9.0])  # collisions: same centre, same class
            bx[-1] = torch.tensor([5.2, 5.1, 8.9, 9.3])
        boxes.append(bx)
        lab = torch.randint(0, c, (n,), generator=g)
        if n:
            lab[0] = lab[-1] = 1
        labels.append(lab)
    tg = build_targets(
        boxes, labels, c, (h, w), max_objs=max_objs, radius_formula=formula, min_overlap=overlap
    )
    exp = _targets_loop(
        [b.numpy() for b in boxes],
        [lab.numpy() for lab in labels],
        c,
        h,
        w,
        max_objs,
        overlap,
        formula,
    )
    for key in ("ind", "mask"):  # indices and 0/1 flags: exact
        assert np.array_equal(tg[key].numpy(), exp[key]), key
    # Floats: torch's vectorised exp / float32 arithmetic vs numpy's scalar path may differ by
    # an ulp; 1e-6 relative (float32 rounding is 6e-8) plus a tiny absolute floor for the
    # Gaussian tails (values < eps * max are zeroed in both, entries near that cut are ~1e-16).
    for key in ("heatmap", "wh", "reg"):
        np.testing.assert_allclose(tg[key].numpy(), exp[key], rtol=1e-6, atol=1e-6, err_msg=key)
    assert tg["num_objects"] == int(exp["mask"].sum())
    assert 0 < tg["num_objects"] < sum(counts)  # some dropped (degenerate / over max_objs)
    assert tg["heatmap"].max() == 1.0  # exp(0) at a centre is exactly 1 on every CPU


def test_no_boxes_gives_empty_targets() -> None:
    tg = build_targets(
        [torch.zeros(0, 4), torch.zeros(0, 4)],
        [torch.zeros(0, dtype=torch.long)] * 2,
        3,
        (8, 8),
        max_objs=5,
    )
    assert tg["num_objects"] == 0
    assert tg["heatmap"].abs().sum() == 0 and tg["mask"].sum() == 0
    assert tg["wh"].shape == (2, 5, 2)


def test_unknown_radius_formula_is_rejected() -> None:
    with pytest.raises(ValueError, match="radius"):
        build_targets(
            [torch.zeros(0, 4)],
            [torch.zeros(0, dtype=torch.long)],
            1,
            (4, 4),
            radius_formula="cornernet",
        )
