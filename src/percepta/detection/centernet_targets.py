"""CenterNet training targets for a whole batch, vectorised (no Python loop over objects).

Follows the official CenterNet ``ctdet`` sample (``src/lib/datasets/sample/ctdet.py`` and
``src/lib/utils/image.py``, xingyizhou/CenterNet 4c50fd3a) and centerX's on-the-fly generator
(CPFLAME/centerX 10737535, from CenterNet-better): for each box in output-map units

* the box is clipped to ``[0, W-1] x [0, H-1]`` and dropped when its width or height is <= 0;
* centre ``ct = ((x1+x2)/2, (y1+y2)/2)`` (float32), integer centre ``floor(ct)``;
* ``wh = (x2-x1, y2-y1)``, ``reg = ct - floor(ct)``, ``ind = y_int * W + x_int``, ``mask = 1``;
  slot ``k`` is the ``k``-th box of the image (at most ``max_objs``; later boxes are dropped and a
  dropped degenerate box leaves its slot empty, as in the official code);
* a Gaussian of radius ``r`` (sigma = (2r+1)/6) is pasted into the class channel at the integer
  centre by element-wise maximum (centre value exactly 1.0).

Two radius formulas (CornerNet's ``gaussian_radius``):

* ``"centernet"``: the original with CornerNet's bug (roots not divided by 2a, wrong sign for the
  first two cases), evaluated in float64 on ``ceil(h), ceil(w)`` as ``ctdet.py`` does; use it at
  ``min_overlap=0.7``.
* ``"centerx"``: the corrected roots, evaluated in float32 on the float box size as centerX does;
  ~3x smaller radii, hence centerX's ``min_overlap=0.3``.

Ignore regions (crowd boxes, VOC "difficult" objects; a percepta addition): they get no slot
and no Gaussian (no positive target), and ``ignore [B,1,H,W]`` marks the heat-map cells they
cover, where :func:`percepta.losses.focal.penalty_reduced_focal_loss` adds no negative term for
any class (class-agnostic, like mmdetection's ``gt_bboxes_ignore``). A box ``[x1, y1, x2, y2]``
in output-map units covers cell ``(row j, column i)`` when the cell's span ``[i, i+1) x [j, j+1)``
overlaps the box's interior, i.e. ``floor(x1) <= i < ceil(x2)`` and ``floor(y1) <= j < ceil(y2)``
(clipped to the map): exactly the cells whose decoded centre ``i + reg_x`` (``reg`` in ``[0, 1)``)
can lie inside the box. Zero-size boxes cover nothing. The official CenterNet trains crowd boxes
as ordinary objects and centerX drops them, i.e. trains them as background (see
:mod:`percepta.losses.focal`); with no ignore box the targets are unchanged.

The radius is clamped at 0 and truncated to an integer. The box geometry is computed in float64
and the centre cast to float32 before flooring, so the targets equal the official numpy ones
exactly. Why by hand: no library draws CenterNet's targets; the drawing is batched here with one
``scatter_reduce(amax)`` over every object's (2R+1)^2 window instead of one numpy paste per object.
"""

from __future__ import annotations

import torch

__all__ = ["RADIUS_FORMULAS", "gaussian_radius", "build_targets", "ignore_mask"]

RADIUS_FORMULAS = ("centernet", "centerx")


def gaussian_radius(
    height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7, formula: str = "centerx"
) -> torch.Tensor:
    """Float Gaussian radius (before clamping/truncation) for boxes of ``height x width``.

    Computed in the dtype of ``height``/``width`` (the official CenterNet used float64 Python
    floats, centerX float32 tensors). ``formula`` is ``"centernet"`` (bug version) or ``"centerx"``
    (corrected). Sizes are used as given (``ctdet.py`` passes ``ceil`` of them; see
    :func:`build_targets`).
    """
    if formula not in RADIUS_FORMULAS:
        raise ValueError(f"radius formula must be one of {RADIUS_FORMULAS}, got {formula!r}")
    h, w, o = height, width, min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    sq1 = torch.sqrt(b1**2 - 4 * c1)
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    sq2 = torch.sqrt(b2**2 - 4 * 4 * c2)
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    sq3 = torch.sqrt(b3**2 - 4 * a3 * c3)
    if formula == "centernet":
        r1, r2, r3 = (b1 + sq1) / 2, (b2 + sq2) / 2, (b3 + sq3) / 2
    else:
        r1, r2, r3 = (b1 - sq1) / 2, (b2 - sq2) / (2 * 4), (b3 + sq3) / (2 * a3)
    return torch.minimum(r1, torch.minimum(r2, r3))


def _int_radius(wh64: torch.Tensor, min_overlap: float, formula: str) -> torch.Tensor:
    """Integer radius as each reference code computes it (see module docstring)."""
    if formula == "centernet":
        size = torch.ceil(wh64)
    else:
        size = wh64.float()
    r = gaussian_radius(size[:, 1], size[:, 0], min_overlap, formula)
    return r.clamp(min=0).to(torch.int64)  # truncation toward 0, like int() / .type(torch.int)


def build_targets(
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    num_classes: int,
    output_size: tuple[int, int],
    *,
    max_objs: int = 128,
    radius_formula: str = "centerx",
    min_overlap: float = 0.3,
    cat_spec_wh: bool = False,
    ignore_boxes: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """All CenterNet targets of a batch.

    Args:
        boxes: per image, ``[N_i,4]`` XYXY boxes **in output-map units** (input pixels x
            letterbox scale / stride). Any float dtype; geometry is done in float64.
        labels: per image, ``[N_i]`` class indices 0..C-1.
        num_classes: C.
        output_size: ``(H, W)`` of the heat map.
        max_objs: object slots per image; boxes beyond are dropped.
        radius_formula: ``"centernet"`` or ``"centerx"``.
        min_overlap: Gaussian radius overlap parameter.
        cat_spec_wh: also return ``cls_ind`` (the class of each slot) for class-specific sizes.
        ignore_boxes: per image, ``[M_i,4]`` XYXY ignore regions in output-map units (or
            ``None``): cells they cover get no negative loss (module docstring).

    Returns:
        dict with ``heatmap [B,C,H,W]`` float32, ``wh [B,M,2]`` float32, ``reg [B,M,2]`` float32,
        ``ind [B,M]`` int64, ``mask [B,M]`` float32, ``cls [B,M]`` int64 (slot class, 0 if empty),
        ``radius [B,M]`` int64 (-1 if empty), ``ignore [B,1,H,W]`` bool (cells of ignore
        regions; all false without them), ``num_objects`` (int).
    """
    if radius_formula not in RADIUS_FORMULAS:
        raise ValueError(f"radius_formula must be one of {RADIUS_FORMULAS}, got {radius_formula!r}")
    bsz = len(boxes)
    height, width = int(output_size[0]), int(output_size[1])
    m = int(max_objs)
    device = boxes[0].device if bsz else torch.device("cpu")
    # Pad every image to M slots at once: [B,M,4] boxes, [B,M] labels, [B,M] present flag.
    box_pad = torch.zeros(bsz, m, 4, dtype=torch.float64, device=device)
    cls_pad = torch.zeros(bsz, m, dtype=torch.int64, device=device)
    present = torch.zeros(bsz, m, dtype=torch.bool, device=device)
    for i, (b, lab) in enumerate(zip(boxes, labels)):  # per image (cheap copies), not per object
        n = min(int(b.shape[0]), m)
        if n:
            box_pad[i, :n] = b[:n].to(device=device, dtype=torch.float64)
            cls_pad[i, :n] = lab[:n].to(device=device, dtype=torch.int64)
            present[i, :n] = True

    x1 = box_pad[..., 0].clamp(0, width - 1)
    x2 = box_pad[..., 2].clamp(0, width - 1)
    y1 = box_pad[..., 1].clamp(0, height - 1)
    y2 = box_pad[..., 3].clamp(0, height - 1)
    wh64 = torch.stack([x2 - x1, y2 - y1], dim=-1)
    valid = present & (wh64[..., 0] > 0) & (wh64[..., 1] > 0)
    ct = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2], dim=-1).float()
    ct_int = ct.floor()
    vmask = valid.float()
    ind = (ct_int[..., 1] * width + ct_int[..., 0]).to(torch.int64) * valid
    reg = (ct - ct_int) * vmask.unsqueeze(-1)
    wh = wh64.float() * vmask.unsqueeze(-1)
    cls_pad = cls_pad * valid

    radius = torch.full((bsz, m), -1, dtype=torch.int64, device=device)
    heat = torch.zeros(bsz, num_classes, height, width, dtype=torch.float32, device=device)
    bi, si = valid.nonzero(as_tuple=True)
    if bi.numel():
        r = _int_radius(wh64[bi, si], min_overlap, radius_formula)
        radius[bi, si] = r
        _draw_gaussians(heat, bi, cls_pad[bi, si], ct_int[bi, si].long(), r)
    return {
        "heatmap": heat,
        "wh": wh,
        "reg": reg,
        "ind": ind,
        "mask": vmask,
        "cls": cls_pad,
        "radius": radius,
        "ignore": ignore_mask(ignore_boxes, bsz, (height, width), device),
        "num_objects": int(bi.numel()),
    }


def ignore_mask(
    ignore_boxes: list[torch.Tensor] | None,
    batch_size: int,
    output_size: tuple[int, int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``[B,1,H,W]`` bool: the output-map cells covered by each image's ignore boxes.

    A cell ``(j, i)`` is covered when ``floor(x1) <= i < ceil(x2)`` and ``floor(y1) <= j <
    ceil(y2)`` (module docstring); boxes are in output-map units, any float dtype.
    """
    height, width = int(output_size[0]), int(output_size[1])
    out = torch.zeros(batch_size, height, width, dtype=torch.bool, device=device)
    if not ignore_boxes:
        return out.unsqueeze(1)
    if len(ignore_boxes) != batch_size:
        raise ValueError(f"ignore_boxes has {len(ignore_boxes)} entries for {batch_size} images")
    per_image = [torch.as_tensor(b).as_subclass(torch.Tensor).reshape(-1, 4) for b in ignore_boxes]
    img = torch.cat([torch.full((len(b),), i, dtype=torch.int64) for i, b in enumerate(per_image)])
    if img.numel() == 0:
        return out.unsqueeze(1)
    box = torch.cat([b.to(torch.float64) for b in per_image]).to(device)
    img = img.to(device)
    x0, y0 = box[:, 0].floor(), box[:, 1].floor()
    x1, y1 = box[:, 2].ceil(), box[:, 3].ceil()
    cols = torch.arange(width, device=device, dtype=torch.float64)
    rows = torch.arange(height, device=device, dtype=torch.float64)
    in_x = (cols >= x0[:, None]) & (cols < x1[:, None])  # [N, W]
    in_y = (rows >= y0[:, None]) & (rows < y1[:, None])  # [N, H]
    real = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])  # zero-size boxes cover nothing
    cover = (in_y[:, :, None] & in_x[:, None, :] & real[:, None, None]).to(torch.float32)
    count = torch.zeros(batch_size, height, width, device=device).index_add_(0, img, cover)
    return (count > 0).unsqueeze(1)


def _draw_gaussians(
    heat: torch.Tensor,
    img: torch.Tensor,
    cls: torch.Tensor,
    centre: torch.Tensor,
    radius: torch.Tensor,
) -> None:
    """Paste one Gaussian per object into ``heat`` (in place) by element-wise maximum.

    Values follow ``gaussian2D``: ``exp(-(x^2 + y^2) / (2 sigma^2))`` in float64 with
    ``sigma = (2r+1)/6``, entries below ``eps(float64) * max`` set to 0, then stored as float32.
    """
    _, c, h, w = heat.shape
    rmax = int(radius.max())
    span = torch.arange(-rmax, rmax + 1, device=heat.device)
    dy = span.view(1, -1, 1)
    dx = span.view(1, 1, -1)
    r = radius.view(-1, 1, 1)
    cx = centre[:, 0].view(-1, 1, 1)
    cy = centre[:, 1].view(-1, 1, 1)
    xs, ys = cx + dx, cy + dy  # [N, 2R+1, 2R+1] broadcast
    inside = (dx.abs() <= r) & (dy.abs() <= r) & (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    sigma = (2 * r + 1).double() / 6
    d2 = (dx * dx + dy * dy).double()
    g = torch.exp(-d2 / (2 * sigma * sigma))
    g = torch.where(g < torch.finfo(torch.float64).eps * 1.0, torch.zeros_like(g), g)  # max is 1
    flat = ((img.view(-1, 1, 1) * c + cls.view(-1, 1, 1)) * h + ys) * w + xs
    heat.view(-1).scatter_reduce_(0, flat[inside], g.float()[inside], reduce="amax")
