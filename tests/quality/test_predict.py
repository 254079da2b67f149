"""Quality prediction: ``percepta.quality.load(checkpoint)(image[, reference])`` and
``percepta predict`` on quality checkpoints (CSV out, counted skips, attention overlays).

Tiny IQT and TRIQ (timm's ``test_resnet``), saved as the trainer saves checkpoints. Expected
scores come from a different route: the model rebuilt here, images decoded by PIL, and for IQT
the test-time average over the crop grid written out by hand (``model.score_crops`` per crop).
Scores agree within 1e-5 (float32, different batch compositions)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import percepta
from percepta import checkpoints, cli, config
from percepta.errors import CheckpointError, DataError

# scores reach 100 (TRIQ's 0-100 scale) in float32 (one ulp at 50 is 3.8e-6), and a padded batch
# reduces in another order than one image alone: a few ulps apart on Intel vs AMD kernels.
# Different images' scores differ by > 0.1 here, so 1e-4 still catches a mix-up.
TOL = 1e-4
IQT = [
    "model.name=iqt",
    "model.backbone=test_resnet",
    "model.crop_size=32",
    "model.d_model=16",
    "model.num_heads=2",
    "model.ffn_dim=32",
    "model.head_dim=8",
    "model.num_layers=1",
    "model.test_crops=4",
    "model.score_range=[1.0,5.0]",
]
TRIQ = [
    "model.name=triq",
    "model.backbone=test_resnet",
    "model.d_model=16",
    "model.num_heads=4",
    "model.ffn_dim=32",
    "model.head_dim=16",
    "model.max_grid=[4,4]",
    "model.score_range=[0.0,100.0]",
]


def save_checkpoint(path: Path, overrides: list[str], task: str = "quality", seed: int = 0):
    """A checkpoint as ``percepta train`` writes it (format, version, task, config, weights)."""
    cfg = config.load(None, ["name=t", f"task={task}", *overrides])
    torch.manual_seed(seed)
    model = percepta.build_model(cfg)
    state = {
        "format": checkpoints.FORMAT,
        "version": checkpoints.VERSION,
        "percepta_version": percepta.__version__,
        "task": task,
        "config": config.to_dict(cfg),
        "model": model.state_dict(),
        "ema": None,
    }
    checkpoints.save_checkpoint(state, path)
    return path, model.eval()


@pytest.fixture(scope="module")
def iqt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("iqt") / "iqt.pt", IQT)


@pytest.fixture(scope="module")
def triq(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("triq") / "triq.pt", TRIQ)


def _png(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _pil_tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)


def _iqt_by_hand(model, dist: torch.Tensor, ref: torch.Tensor, offsets) -> float:
    """Mean over the given crops of ``score_crops``, mapped to [1, 5] (score_range)."""
    d, r = dist.float() / 255, ref.float() / 255
    with torch.no_grad():
        units = [
            model.score_crops(
                d[None, :, t : t + 32, x : x + 32], r[None, :, t : t + 32, x : x + 32]
            )
            for t, x in offsets
        ]
    return float(1.0 + 4.0 * torch.cat(units).mean())


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


# ---------------------------------------------------------------------------------- Python API
def test_iqt_score_is_the_crop_grid_average_for_every_input_kind(iqt, tmp_path):
    ckpt, model = iqt
    d_path, r_path = _png(tmp_path / "d.png", 40, 48, 1), _png(tmp_path / "r.png", 40, 48, 2)
    dist, ref = _pil_tensor(d_path), _pil_tensor(r_path)
    # 40x48, crop 32, M=4: 2 offsets per axis, tops [0, 8], lefts [0, 16], row-major
    want = _iqt_by_hand(model, dist, ref, [(0, 0), (0, 16), (8, 0), (8, 16)])
    predictor = percepta.quality.load(ckpt, device="cpu")
    assert predictor.full_reference and predictor.name == "IQT"
    got = [
        predictor(d_path, r_path),
        predictor(str(d_path), str(r_path)),
        predictor(dist, ref),
        predictor(dist.float() / 255, ref.float() / 255),
        predictor(Image.open(d_path), Image.open(r_path)),
        predictor(dist.permute(1, 2, 0).numpy(), ref.permute(1, 2, 0).numpy()),
    ]
    for g in got:
        assert isinstance(g, float)
        assert g == pytest.approx(want, abs=TOL)


def test_triq_takes_any_size(triq, tmp_path):
    ckpt, model = triq
    predictor = percepta.quality.load(str(ckpt), device="cpu")
    assert not predictor.full_reference
    for i, (h, w) in enumerate([(64, 64), (96, 160), (128, 96)]):
        path = _png(tmp_path / f"{i}.png", h, w, 10 + i)
        with torch.no_grad():  # another route: score_batch of a one-image batch
            want = float(model.score_batch((_pil_tensor(path).float() / 255)[None])[0])
        assert predictor(path) == pytest.approx(want, abs=TOL)


def test_python_api_errors_name_the_problem(iqt, triq, tmp_path):
    p_iqt = percepta.quality.load(iqt[0], device="cpu")
    p_triq = percepta.quality.load(triq[0], device="cpu")
    good = _png(tmp_path / "good.png", 32, 32, 3)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="full-reference"):
        p_iqt(good)
    with pytest.raises(DataError, match="no-reference"):
        p_triq(good, good)
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        p_iqt(bad, good)
    with pytest.raises(DataError, match="missing.png: not found"):
        p_triq(tmp_path / "missing.png")
    with pytest.raises(
        DataError, match=r"good\.png: 32x32 px, but its reference .*wide\.png is 40x32"
    ):
        p_iqt(good, _png(tmp_path / "wide.png", 32, 40, 4))
    det = tmp_path / "det.pt"
    torch.save({"format": checkpoints.FORMAT, "version": checkpoints.VERSION, "task": "detection",
                "config": {}, "model": {}}, det)  # fmt: skip
    with pytest.raises(CheckpointError, match="'detection'"):
        percepta.quality.load(det)


# ---------------------------------------------------------------------------------- CLI
def test_cli_no_reference_folder_to_csv_with_a_counted_skip(triq, tmp_path, capsys):
    ckpt, model = triq
    folder = tmp_path / "photos"
    files = [_png(folder / "a.png", 64, 96, 20), _png(folder / "sub" / "b.png", 96, 64, 21)]
    (folder / "c.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "scores.csv"
    assert cli.main(["predict", str(ckpt), str(folder), "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "2 images scored" in captured.out and "1 skipped" in captured.out
    skipped = [x for x in captured.err.splitlines() if x.startswith("skipped: ")]
    assert len(skipped) == 1 and "c.png: not a readable image" in skipped[0]
    rows = _read_csv(out)
    assert [list(r) for r in rows] == [["image", "score"]] * 2
    assert [r["image"] for r in rows] == ["a.png", "sub/b.png"]  # relative to the folder
    for row, path in zip(rows, files):
        with torch.no_grad():
            want = float(model([_pil_tensor(path)])[0]["score"])
        assert float(row["score"]) == pytest.approx(want, abs=TOL)
    # the file pairs by name with a MOS file in `percepta score quality`
    mos = tmp_path / "mos.csv"
    mos.write_text("image,mos\na.png,10\nsub/b.png,20\n")
    capsys.readouterr()
    assert cli.main(["score", "quality", "--pred", str(out), "--mos", str(mos), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_cli_full_reference_with_a_reference_folder(iqt, tmp_path, capsys):
    ckpt, model = iqt
    _png(tmp_path / "dist" / "x.png", 40, 48, 30)
    _png(tmp_path / "dist" / "y.png", 32, 32, 31)  # no reference y.png: a counted skip
    _png(tmp_path / "refs" / "x.png", 40, 48, 32)
    out = tmp_path / "o"  # a folder: scores.csv inside
    args = ["predict", str(ckpt), str(tmp_path / "dist"), "--reference", str(tmp_path / "refs")]
    assert cli.main([*args, "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "skipped: " in captured.err and "y.png: no reference" in captured.err
    rows = _read_csv(out / "scores.csv")
    assert rows == [{"image": "x.png", "reference": "x.png", "score": rows[0]["score"]}]
    want = _iqt_by_hand(
        model,
        _pil_tensor(tmp_path / "dist" / "x.png"),
        _pil_tensor(tmp_path / "refs" / "x.png"),
        [(0, 0), (0, 16), (8, 0), (8, 16)],
    )
    assert float(rows[0]["score"]) == pytest.approx(want, abs=TOL)


def test_cli_pairs_csv_with_attention_overlays(iqt, tmp_path, capsys):
    ckpt, model = iqt
    root = tmp_path / "table"
    _png(root / "d1.png", 32, 48, 40)
    _png(root / "r1.png", 32, 48, 41)
    _png(root / "d2.png", 32, 32, 42)
    _png(root / "r2.png", 40, 40, 43)  # another size than its image: a counted skip
    _png(root / "d3.png", 36, 36, 44)
    (root / "table.csv").write_text(
        "image,reference,score\nd1.png,r1.png,3\nd2.png,r2.png,2\nd3.png,,4\n"
    )
    out, att = tmp_path / "s.csv", tmp_path / "att"
    code = cli.main(
        ["predict", str(ckpt), "--pairs", str(root / "table.csv"), "--out", str(out),
         "--attention", str(att), "--device", "cpu", "--batch-size", "2"]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "d2.png: 32x32 px, but its reference" in err and "r2.png is 40x40 px" in err
    assert "d3.png: no reference given" in err
    rows = _read_csv(out)
    assert [(r["image"], r["reference"]) for r in rows] == [("d1.png", "r1.png")]
    pngs = sorted(att.glob("*.png"))
    assert [p.name for p in pngs] == ["00000_d1.png"]
    pic = Image.open(pngs[0])
    assert pic.size == (48, 32) and pic.mode == "RGB"


def test_cli_nothing_scorable_fails_and_writes_nothing(triq, tmp_path, capsys):
    ckpt, _ = triq
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    _png(folder / "tiny.png", 16, 16, 50)  # TRIQ needs >= 32 px: the model's DataError
    out = tmp_path / "scores.csv"
    assert cli.main(["predict", str(ckpt), str(folder), "--out", str(out)]) == 2
    err = _last_error(capsys)
    assert "none of the 2 images could be scored" in err and "nothing was written" in err
    assert not out.exists()


def test_cli_usage_errors_are_one_line(iqt, triq, tmp_path, capsys):
    img = _png(tmp_path / "i.png", 32, 32, 60)
    out = ["--out", str(tmp_path / "o.csv")]
    assert cli.main(["predict", str(iqt[0]), str(img), *out]) == 2
    assert "full-reference: give --reference" in _last_error(capsys)
    assert cli.main(["predict", str(triq[0]), str(img), "--reference", str(img), *out]) == 2
    assert "no-reference" in _last_error(capsys)
    assert cli.main(["predict", str(triq[0]), str(img), "--coco", "x.json", *out]) == 2
    assert "--coco is for detection" in _last_error(capsys)
    assert cli.main(["predict", str(iqt[0]), *out]) == 2
    assert "--pairs" in _last_error(capsys)
    det = tmp_path / "det.pt"
    torch.save({"format": checkpoints.FORMAT, "version": checkpoints.VERSION, "task": "detection",
                "config": {}, "model": {}}, det)  # fmt: skip
    assert cli.main(["predict", str(det), str(img), "--pairs", "t.csv", *out]) == 2
    assert "--pairs: only for quality checkpoints" in _last_error(capsys)
    assert cli.main(["predict", str(det), *out]) == 2
    assert "at least one image" in _last_error(capsys)


def test_a_checkpoint_labelled_quality_with_another_tasks_model_is_refused(tmp_path, capsys):
    overrides = ["model.name=centernet", "model.backbone=test_resnet", "model.input_size=64",
                 "model.num_classes=2", "model.neck_channels=[32,16,8]", "model.head_conv=8"]  # fmt: skip
    cfg = config.load(None, ["name=t", "task=detection", *overrides])
    state = {
        "format": checkpoints.FORMAT,
        "version": checkpoints.VERSION,
        "task": "quality",  # mislabelled
        "config": config.to_dict(cfg),
        "model": percepta.build_model(cfg).state_dict(),
        "ema": None,
    }
    bad = checkpoints.save_checkpoint(state, tmp_path / "bad.pt")
    img = _png(tmp_path / "i.png", 32, 32, 70)
    assert cli.main(["predict", str(bad), str(img), "--out", str(tmp_path / "o.csv")]) == 2
    assert "its model 'centernet' is a detection model" in _last_error(capsys)
