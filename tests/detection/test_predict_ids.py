"""`percepta predict` writes the dataset's own ids: category ids from the checkpoint's
``model.category_ids`` (label + 1 with one warning for checkpoints without them) and, with
``--coco``, the COCO file's image ids matched by file name; the output scores with
`percepta score detection` (issue 10, defect 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from percepta import cli
from percepta.errors import DataError

REPO = Path(__file__).resolve().parents[2]
TINY_COCO = REPO.parent / "shared" / "data" / "tiny_coco"


def make_checkpoint(path: Path, class_names: list[str], category_ids: list[int]) -> Path:
    """A randomly initialised tiny CenterNet (64 px, ResNet-18) saved with the checkpoint API."""
    import percepta
    from percepta import config
    from percepta.engine.build import build_model
    from percepta.engine.checkpoint import FORMAT, VERSION, save_checkpoint

    cfg = config.load(
        None,
        [
            "name=predict_test",
            "task=detection",
            "model.name=centernet",
            "model.backbone=resnet18",
            "model.input_size=64",
            "model.neck_channels=[32,32,32]",
            "model.head_conv=16",
        ],
    )
    data = config.to_dict(cfg)
    data["model"].update(
        num_classes=len(class_names), class_names=list(class_names), category_ids=list(category_ids)
    )
    cfg = config.from_dict(data)
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_checkpoint(
        {
            "format": FORMAT,
            "version": VERSION,
            "percepta_version": percepta.__version__,
            "task": "detection",
            "config": config.to_dict(cfg),
            "model": model.state_dict(),
            "iteration": 0,
        },
        path,
    )


def _png(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> Path:
    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g), str(path))
    return path


@pytest.mark.shared_data
def test_predict_then_score_on_tiny_coco(tmp_path, capsys):
    if not TINY_COCO.is_dir():
        pytest.skip(f"shared dataset not found at {TINY_COCO}")
    gt_file = TINY_COCO / "annotations" / "instances_val2017.json"
    gt = json.loads(gt_file.read_text())
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    assert ids[-1] == 90 and len(ids) == 80  # sparse COCO ids: label + 1 would be wrong
    ckpt = make_checkpoint(tmp_path / "tiny.pt", [c["name"] for c in cats], ids)
    out = tmp_path / "pred"
    assert (
        cli.main(
            [
                "predict",
                str(ckpt),
                str(TINY_COCO / "val2017"),
                "--out",
                str(out),
                "--coco",
                str(gt_file),
                "--no-draw",
            ]
        )
        == 0
    )
    capsys.readouterr()
    records = json.loads((out / "predictions.json").read_text())
    assert records
    name_of = {c["id"]: c["name"] for c in cats}
    for r in records:
        # COCO val2017 file names are the zero-padded image id
        assert r["image_id"] == int(Path(r["file_name"]).stem)
        assert r["category_id"] == ids[r["label"]]
        assert r["category_name"] == name_of[r["category_id"]]
    assert len({r["image_id"] for r in records}) == len(gt["images"])
    assert (
        cli.main(
            [
                "score",
                "detection",
                "--gt",
                str(gt_file),
                "--pred",
                str(out / "predictions.json"),
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert 0.0 <= metrics["AP"] <= 1.0 and "error" not in captured.err


def test_checkpoint_without_category_ids_writes_label_plus_one_with_one_warning(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "old.pt", ["a", "b", "c"], [])
    for i in range(3):
        _png(tmp_path / "imgs" / f"im{i}.png", i)
    out = tmp_path / "pred"
    assert (
        cli.main(["predict", str(ckpt), str(tmp_path / "imgs"), "--out", str(out), "--no-draw"])
        == 0
    )
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "label + 1" in warnings[0] and "old.pt" in warnings[0]
    records = json.loads((out / "predictions.json").read_text())
    assert records and all(r["category_id"] == r["label"] + 1 for r in records)
    # without --coco: the file's position in the sorted input list
    assert {Path(r["file_name"]).name: r["image_id"] for r in records} == {
        "im0.png": 0,
        "im1.png": 1,
        "im2.png": 2,
    }


def test_coco_ids_by_basename_or_relative_path(tmp_path):
    from percepta.detection.predict import coco_image_ids

    a = _png(tmp_path / "data" / "val" / "x.png", 0)
    b = _png(tmp_path / "elsewhere" / "y.png", 1)
    c = _png(tmp_path / "data" / "test" / "x.png", 2)
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 7, "file_name": "val/x.png"},
                    {"id": 11, "file_name": "test/x.png"},
                    {"id": 30, "file_name": "y.png"},
                ],
                "annotations": [],
                "categories": [],
            }
        )
    )
    ids, _ = coco_image_ids(ann, [a, b, c])
    assert ids == {a: 7, b: 30, c: 11}
    # a basename that two records share is ambiguous; two files for one record are refused
    ann.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "x.png"}]})
    )
    with pytest.raises(DataError, match="ambiguous"):
        coco_image_ids(ann, [a])
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}]}))
    with pytest.raises(DataError, match="both match image id 1"):
        coco_image_ids(ann, [a, c])


def test_images_not_in_the_coco_file_are_refused(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt", ["a", "b"], [3, 9])
    for i in range(3):
        _png(tmp_path / "imgs" / f"im{i}.png", i)
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 5, "file_name": "im0.png"}, {"id": 6, "file_name": "im1.png"}],
                "annotations": [],
                "categories": [{"id": 3, "name": "a"}, {"id": 9, "name": "b"}],
            }
        )
    )
    out = tmp_path / "pred"
    code = cli.main(
        ["predict", str(ckpt), str(tmp_path / "imgs"), "--out", str(out), "--coco", str(ann)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "1 of 3 images" in err and "im2.png" in err and "Traceback" not in err
    assert not out.exists()
    # the two known images alone: their ids and the checkpoint's category ids
    (tmp_path / "imgs" / "im2.png").unlink()
    assert (
        cli.main(
            [
                "predict",
                str(ckpt),
                str(tmp_path / "imgs"),
                "--out",
                str(out),
                "--coco",
                str(ann),
                "--no-draw",
            ]
        )
        == 0
    )
    records = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in records} == {5, 6}
    assert {r["category_id"] for r in records} <= {3, 9}
    assert all(r["category_id"] == [3, 9][r["label"]] for r in records)
