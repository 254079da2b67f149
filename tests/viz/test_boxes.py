"""Labels on prediction pictures: a filled background in the box colour, text sized with the
picture, kept inside the image; small pictures enlarged (issue 10, defect 9)."""

from __future__ import annotations

import torch

from percepta.viz.boxes import draw_detections, palette

RED = palette(1)[0]  # label 0's colour, (230, 25, 75): dark, so the text is white


def _is(img: torch.Tensor, colour: tuple[int, int, int]) -> torch.Tensor:
    """``[H,W]`` mask of the pixels of exactly ``colour``."""
    return (img == torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)).all(0)


def _draw(size: int, box: list[float], name: str = "person") -> torch.Tensor:
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    return draw_detections(img, torch.tensor([box]), torch.tensor([0]), torch.tensor([0.9]), [name])


def test_label_has_a_filled_background_above_the_box_scaled_with_the_image():
    out = _draw(1024, [100, 300, 400, 600])
    assert out.shape == (3, 1024, 1024)
    red = _is(out, RED)
    rows = red[:300, 101].nonzero().flatten()  # left padding column of the label, above the box
    assert len(rows) >= 20 and int(rows.max()) == 299  # >= 20 px tall, touching the box
    label = out[:, int(rows.min()) : 300, 100:400]
    assert int(_is(label, (255, 255, 255)).sum()) > 50  # white text on the dark background
    # the label of a 64 px picture: the picture is enlarged 6x, the label is >= 12 px tall
    small = _draw(64, [10, 20, 40, 50])
    assert small.shape == (3, 384, 384)
    rows = _is(small, RED)[:120, 61].nonzero().flatten()
    assert len(rows) >= 12 and int(rows.max()) == 119


def test_label_stays_inside_the_image_at_the_borders():
    # at the right border: the label is shifted left so that all of it is visible
    out = _draw(1024, [990, 500, 1023, 600], name="a rather long class name")
    red = _is(out, RED)
    label_rows = red[450:500].any(1).nonzero().flatten() + 450
    assert len(label_rows) >= 20
    cols = red[int(label_rows[0]) + 1].nonzero().flatten()
    assert int(cols.min()) < 990 - 200 and int(cols.max()) == 1023
    # at the top border: just inside the box's top edge, a filled block (text covers less than
    # half of it); away from the box lines (3 px wide at rows 0-2 and columns 100-102)
    top = _is(_draw(1024, [100, 0, 400, 300]), RED)
    block = top[4:20, 104:200]
    assert float(block.float().mean()) > 0.5


def test_float_image_in_0_1_draws_like_uint8():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 400, 500), dtype=torch.uint8, generator=g)
    boxes, labels, scores = torch.tensor([[50.0, 60, 200, 300]]), torch.tensor([0]), None
    assert torch.equal(
        draw_detections(img, boxes, labels, scores, ["x"]),
        draw_detections(img.float() / 255, boxes, labels, scores, ["x"]),
    )


def test_degenerate_boxes_are_drawn_not_refused():
    # an untrained model predicts negative sizes (x2 < x1); torchvision refuses such boxes
    out = _draw(256, [150, 50, 140, 80])
    assert int(_is(out, RED).sum()) > 100
