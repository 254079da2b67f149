"""ONNX export of the quality models: IQT (fixed crop, reference + distorted) and TRIQ (fixed or
dynamic size), each compared with PyTorch through onnxruntime *directly* (not only through
percepta's own parity check), the size rules of a dynamic TRIQ graph, and the CLI end to end
(``percepta export`` then ``percepta predict model.onnx``). Tiny models (timm's
``test_resnet``, stride 32); scores agree within 1e-4 (the issue's parity tolerance)."""

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
from percepta.errors import DataError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from percepta.export.onnx_quality import (  # noqa: E402 - after the importorskip
    ExportError,
    OnnxQualityPredictor,
    check_quality_parity,
    default_triq_size,
    export_quality_onnx,
)

ATOL = 1e-4
IQT = [
    "model.name=iqt",
    "model.backbone=test_resnet",
    "model.crop_size=32",
    "model.d_model=16",
    "model.num_heads=2",
    "model.ffn_dim=32",
    "model.head_dim=8",
    "model.num_layers=1",
    "model.test_crops=3",
    "model.score_range=[1.0,5.0]",
]
TRIQ = [
    "model.name=triq",
    "model.backbone=test_resnet",
    "model.d_model=16",
    "model.num_heads=4",
    "model.ffn_dim=32",
    "model.head_dim=16",
    "model.pool_from=4",  # 128 px -> 4 cells -> pooled to 2
    "model.max_grid=[2,3]",
    "model.score_range=[1.0,5.0]",
]


def _checkpoint(path: Path, overrides: list[str], seed: int = 0):
    """A checkpoint as ``percepta train`` writes it (format, version, task, config, weights)."""
    cfg = config.load(None, ["name=t", "task=quality", *overrides])
    torch.manual_seed(seed)
    model = percepta.build_model(cfg).eval()
    state = {
        "format": checkpoints.FORMAT,
        "version": checkpoints.VERSION,
        "percepta_version": percepta.__version__,
        "task": "quality",
        "config": config.to_dict(cfg),
        "model": model.state_dict(),
        "ema": None,
    }
    checkpoints.save_checkpoint(state, path)
    return path, model


@pytest.fixture(scope="module")
def iqt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("iqt") / "iqt.pt", IQT)


@pytest.fixture(scope="module")
def triq(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("triq") / "triq.pt", TRIQ, seed=1)


def _u8(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_iqt_graph_matches_score_crops_and_whole_images_match_eval(iqt, tmp_path):
    _, model = iqt
    path = export_quality_onnx(model, tmp_path / "iqt.onnx")
    meta = _metadata(path)
    assert meta["task"] == "quality" and meta["model"] == "iqt"
    assert json.loads(meta["crop_size"]) == 32 and json.loads(meta["full_reference"]) is True
    batch = json.loads(meta["batch"])  # test_resnet's taps differ in size: a fixed batch
    assert batch == 3
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()] == ["distorted", "reference"]
    d = _u8(batch, 3, 32, 32, seed=1).float() / 255
    r = _u8(batch, 3, 32, 32, seed=2).float() / 255
    (got,) = sess.run(None, {"distorted": d.numpy(), "reference": r.numpy()})
    with torch.no_grad():
        want = 1.0 + 4.0 * model.score_crops(d, r)  # score_range [1, 5]
    np.testing.assert_allclose(got, want.numpy(), atol=ATOL, rtol=0)
    # whole images (crop grid + averaging on the host), one smaller than the crop
    runner = OnnxQualityPredictor(path)
    imgs = [_u8(3, 40, 56, seed=3), _u8(3, 24, 30, seed=4)]
    refs = [_u8(3, 40, 56, seed=5), _u8(3, 24, 30, seed=6)]
    with torch.no_grad():
        want = [float(p["score"]) for p in model(imgs, [{"reference": x} for x in refs])]
    np.testing.assert_allclose(runner(imgs, refs), want, atol=ATOL, rtol=0)
    report = check_quality_parity(model, path)
    assert report["ok"] and report["max_score_diff"] <= ATOL and report["scores"] == 6


def test_triq_fixed_size_graph_and_its_size_rule(triq, tmp_path):
    _, model = triq
    assert default_triq_size(model) == (128, 192)  # 2x3 table, pooled regime, stride 32
    path = export_quality_onnx(model, tmp_path / "triq.onnx")
    sess = _session(path)
    x = _u8(2, 3, 128, 192, seed=7).float() / 255
    score, grid = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = [float(p["score"]) for p in model(x)]
    np.testing.assert_allclose(score, want, atol=ATOL, rtol=0)
    assert grid.tolist() == [4, 6]  # C5 cells before the 2x2 pooling
    runner = OnnxQualityPredictor(path)
    with pytest.raises(DataError, match="takes 128x192 images"):
        runner([_u8(3, 96, 96, seed=8)])


def test_triq_dynamic_graph_any_size_in_the_traced_regime(triq, tmp_path):
    _, model = triq
    path = export_quality_onnx(model, tmp_path / "dyn.onnx", image_size=(128, 160), dynamic=True)
    assert json.loads(_metadata(path)["dynamic"]) is True
    sess = _session(path)
    for h, w in [(128, 160), (128, 192), (160, 128), (150, 130)]:  # all >= 4 cells high: pooled
        x = _u8(1, 3, h, w, seed=h + w).float() / 255
        score, _ = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = float(model(x)[0]["score"])
        assert float(score[0]) == pytest.approx(want, abs=ATOL), (h, w)
    runner = OnnxQualityPredictor(path)
    # 96 px high -> 3 cells: PyTorch would not pool; the traced graph would: refused
    with pytest.raises(DataError, match="96x160 px gives a 3x5 feature grid"):
        runner([_u8(3, 96, 160, seed=9)])
    report = check_quality_parity(model, path)
    assert report["ok"] and len(report["sizes"]) == 2


def test_export_refuses_what_it_cannot_trace(iqt, triq, tmp_path):
    with pytest.raises(ExportError, match="--image-size and --dynamic are for TRIQ"):
        export_quality_onnx(iqt[1], tmp_path / "x.onnx", dynamic=True)
    with pytest.raises(ExportError, match="more than the position table"):
        export_quality_onnx(triq[1], tmp_path / "x.onnx", image_size=256)
    with pytest.raises(ExportError, match="only IQT and TRIQ"):
        export_quality_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")


def test_cli_export_then_predict_with_the_onnx_file(iqt, tmp_path, capsys):
    ckpt, model = iqt
    out = tmp_path / "iqt.onnx"
    assert cli.main(["export", str(ckpt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "-> ok" in printed
    root = tmp_path / "pairs"
    root.mkdir()
    for i, size in enumerate([(40, 48), (32, 32)]):
        for kind, seed in (("d", 10 + i), ("r", 20 + i)):
            arr = _u8(*size, 3, seed=seed).numpy()
            Image.fromarray(arr).save(root / f"{kind}{i}.png")
    (root / "pairs.csv").write_text("image,reference\nd0.png,r0.png\nd1.png,r1.png\n")
    scores = {}
    for model_file in (ckpt, out):
        csv_out = tmp_path / f"{Path(model_file).suffix[1:]}.csv"
        code = cli.main(
            ["predict", str(model_file), "--pairs", str(root / "pairs.csv"), "--out", str(csv_out)]
        )
        assert code == 0
        with csv_out.open(newline="") as f:
            scores[model_file] = [float(r["score"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(scores[out], scores[ckpt], atol=ATOL, rtol=0)
    capsys.readouterr()
    # attention maps need the PyTorch model
    code = cli.main(
        ["predict", str(out), "--pairs", str(root / "pairs.csv"), "--out", str(tmp_path / "a.csv"),
         "--attention", str(tmp_path / "att")]
    )  # fmt: skip
    assert code == 2 and "attention maps need the PyTorch checkpoint" in capsys.readouterr().err


def test_cli_export_dynamic_triq(triq, tmp_path, capsys):
    ckpt, _ = triq
    out = tmp_path / "t.onnx"
    args = ["export", str(ckpt), "--out", str(out), "--dynamic", "--image-size", "128", "160"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "sizes 128x160, " in printed and "-> ok" in printed
    meta = _metadata(out)
    assert json.loads(meta["input_size"]) == [128, 160] and json.loads(meta["pooled"]) is True


def test_dynamic_triq_with_an_interpolated_position_table(tmp_path):
    from percepta.quality.triq import TRIQConfig, build_triq

    torch.manual_seed(2)
    cfg = TRIQConfig(
        backbone="test_resnet",
        d_model=16,
        num_heads=4,
        ffn_dim=32,
        head_dim=16,
        pool_from=0,  # never pool
        max_grid=[2, 2],
        position_mode="interpolate",
        score_range=[1.0, 5.0],
    )
    model = build_triq(cfg).eval()
    # traced at the table's own grid (2x2 cells), where TRIQ.position skips the resize
    path = export_quality_onnx(model, tmp_path / "interp.onnx", image_size=64, dynamic=True)
    sess = _session(path)
    for h, w in [(64, 64), (96, 160), (32, 64)]:
        x = _u8(1, 3, h, w, seed=h * w).float() / 255
        score, _ = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = float(model(x)[0]["score"])
        assert float(score[0]) == pytest.approx(want, abs=ATOL), (h, w)
