"""Quality models train and evaluate through the unchanged engine and CLI.

IQT (full-reference: the engine hands it each target's ``reference``) from the shipped config on
a small draw of the built-in distortion data, then ``percepta eval --json``; TRIQ (no-reference)
on a few real LIVE In-the-Wild images with their human scores. The metrics are checked against
an independent computation on the same predictions (scipy), not only for being present.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy import stats
from tests.conftest import shared_data_path

from percepta import cli
from percepta.checkpoints import load_model
from percepta.data.iqa_readers import read_clive
from percepta.data.iqa_table import IqaTableConfig, build_iqa_table, write_table
from percepta.data.synthetic.quality import generate_quality

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.backbone=test_resnet",
    "model.crop_size=32",
    "model.d_model=32",
    "model.ffn_dim=64",
    "model.head_dim=32",
    "model.test_crops=2",
    "train.max_iters=4",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.progress=false",
    "train.tensorboard=false",
]


def _scores_by_hand(ckpt: Path, table, indices: list[int]) -> list[float]:
    """The checkpoint's score of each row, images read here (not by percepta's loader)."""
    from torchvision.io import read_image

    model = load_model(ckpt)
    out = []
    with torch.no_grad():
        for i in indices:
            rec = table.records[i]
            img = read_image(str(Path(table.root) / rec.image))
            ref = read_image(str(Path(table.root) / rec.reference))
            out.append(float(model([img], [{"reference": ref}])[0]["score"]))
    return out


def test_iqt_trains_from_the_shipped_config_and_eval_agrees_with_scipy(tmp_path, capsys):
    data = tmp_path / "q"
    generate_quality(data, num_references=5, image_size=64, seed=0, workers=1)
    out = tmp_path / "runs"
    args = [
        "train",
        str(REPO / "configs/quality/iqt_r18_builtin.yaml"),
        f"data.root={data}",
        f"output_dir={out}",
        *TINY,
    ]
    assert cli.main(args) == 0
    ckpt = out / "iqt_r18_builtin" / "checkpoints" / "last.pt"
    capsys.readouterr()
    assert cli.main(["eval", str(ckpt), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 50  # fold 0 of 5: one reference x 50 distortions, content-disjoint
    saved = torch.load(ckpt, weights_only=True)["config"]
    lo, hi = saved["model"]["score_range"]  # filled from the dataset's meta
    assert (lo, hi) == (1.0, 5.0)
    # independent: SROCC of the model's own per-image scores against the table, by scipy
    ds = build_iqa_table(
        IqaTableConfig(table="quality.csv", num_folds=5, fold=0, split="test"),
        root=str(data),
        train=False,
    )
    pred = _scores_by_hand(ckpt, ds.table, ds.indices)
    mos = [ds.table.records[i].score for i in ds.indices]
    assert metrics["srocc"] == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-6)
    assert metrics["rmse"] == pytest.approx(
        (sum((p - m) ** 2 for p, m in zip(pred, mos)) / len(mos)) ** 0.5, rel=1e-5
    )


@pytest.mark.shared_data
def test_triq_trains_on_real_clive_scores(tmp_path, capsys):
    root = shared_data_path("clive")
    table = read_clive(root)
    table.records = table.records[:12]
    path = write_table(table, tmp_path / "clive12.csv")
    out = tmp_path / "runs"
    args = [
        "train",
        "task=quality",
        "name=triq_clive",
        f"output_dir={out}",
        "model.name=triq",
        "model.backbone=test_resnet",
        "model.max_grid=[16,16]",
        "data.root=.",
        "data.train.name=iqa_table",
        f"data.train.table={path}",
        "data.train.split=all",
        "data.train.image_size=96",
        "data.val.name=iqa_table",
        f"data.val.table={path}",
        "data.val.split=all",
        "data.val.image_size=96",
        "evaluator.name=quality",
        "train.max_iters=2",
        "train.batch_size=4",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    assert cli.main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    ckpt = out / "triq_clive" / "checkpoints" / "last.pt"
    assert cli.main(["eval", str(ckpt), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 12 and -1.0 <= metrics["srocc"] <= 1.0


@pytest.mark.shared_data
@pytest.mark.slow
def test_triq_trains_from_the_shipped_clive_config(tmp_path, capsys, monkeypatch):
    """configs/quality/triq_r18_clive.yaml reads ../shared/data/clive in place (reader: clive),
    holds out fold 0 (126 of the 627 images), and its cross-dataset eval command scores all
    300 BIQ2021 images; tiny model and images so the test is fast."""
    clive, biq = shared_data_path("clive"), shared_data_path("biq2021")
    monkeypatch.chdir(REPO)
    out = tmp_path / "runs"
    small = ["data.train.image_size=64", "data.val.image_size=64"]
    args = [
        "train",
        "configs/quality/triq_r18_clive.yaml",
        f"output_dir={out}",
        f"data.root={clive.parent}",
        "model.backbone=test_resnet",
        *small,
        "train.max_iters=2",
        "train.batch_size=4",
        "train.eval_period=0",
        "train.num_workers=0",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    assert cli.main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    ckpt = out / "triq_r18_clive" / "checkpoints" / "last.pt"
    assert cli.main(["eval", str(ckpt), "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["n"] == 126 and -1.0 <= own["srocc"] <= 1.0  # ceil(627 / 5) images in fold 0
    cross = ["data.val.reader=biq2021", "data.val.table=biq2021", "data.val.split=all"]
    assert cli.main(["eval", str(ckpt), *cross, f"data.root={biq.parent}", "--json"]) == 0
    x = json.loads(capsys.readouterr().out)
    assert x["n"] == 300 and -1.0 <= x["srocc"] <= 1.0
    # the held-out fold never meets training: fold 0's test rows are disjoint from its train rows
    split = lambda s: build_iqa_table(  # noqa: E731
        IqaTableConfig(table=str(clive), reader="clive", split=s, fold=0), train=True
    )
    train, test = split("train"), split("test")
    assert len(train) + len(test) == 627 and not set(train.image_ids) & set(test.image_ids)
