"""Config -> train -> checkpoint -> eval/predict/load, through the CLI, on a tiny built-in set."""

from __future__ import annotations

import json

import pytest
import torch

import percepta
from percepta import cli
from percepta.data.synthetic.detection import generate_detection


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    generate_detection(data, num_images=12, image_size=64, val_fraction=0.25, seed=3, workers=1)
    cfg = root / "tiny.yaml"
    cfg.write_text(f"""
name: tiny
output_dir: {root / 'runs'}
model: {{name: centernet, backbone: resnet18, input_size: 64, neck_channels: [32, 32, 32], head_conv: 16}}
data:
  root: {data}
  train: {{name: coco, ann_file: annotations/instances_train.json}}
  val: {{name: coco, ann_file: annotations/instances_val.json}}
evaluator: {{name: coco}}
train: {{max_iters: 4, batch_size: 4, log_period: 2, checkpoint_period: 2, progress: false,
         tensorboard: false}}
""")
    assert cli.main(["train", str(cfg)]) == 0
    return root, data, cfg


def test_train_writes_run_folder(tiny_run):
    root, _, _ = tiny_run
    run = root / "runs" / "tiny"
    for rel in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "eval"):
        assert (run / rel).exists(), rel
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval" in x and "AP" in x["eval"] for x in lines)


def test_load_rebuilds_model_from_checkpoint_alone(tiny_run):
    root, _, _ = tiny_run
    model = percepta.load(str(root / "runs" / "tiny" / "checkpoints" / "last.pt"))
    assert model.class_names == ["circle", "square", "triangle", "star", "arrow", "cross"]
    preds = model([torch.zeros(3, 50, 70, dtype=torch.uint8)])
    assert set(preds[0]) >= {"boxes", "scores", "labels"}


def test_eval_cli_json(tiny_run, capsys):
    root, _, _ = tiny_run
    assert cli.main(["eval", str(root / "runs" / "tiny" / "checkpoints" / "last.pt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= out["AP"] <= 1.0 and "oLRP" in out


def test_predict_cli_skips_corrupt_files(tiny_run, tmp_path, capsys):
    root, data, _ = tiny_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted((data / "val").glob("*.png"))[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png at all")
    out = tmp_path / "pred"
    ckpt = str(root / "runs" / "tiny" / "checkpoints" / "last.pt")
    assert cli.main(["predict", ckpt, str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "broken.png" in printed and "skipped" in printed
    recs = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in recs} <= {0, 1}
    assert len(list((out / "images").glob("*.png"))) == 2


def test_checkpoint_of_another_task_is_refused(tiny_run, tmp_path, capsys):
    root, data, _ = tiny_run
    ck = torch.load(root / "runs" / "tiny" / "checkpoints" / "last.pt", weights_only=True)
    ck["task"] = "quality"
    torch.save(ck, tmp_path / "other.pt")
    code = cli.main(["predict", str(tmp_path / "other.pt"), str(data / "val"), "--out", str(tmp_path / "o")])
    assert code == 2 and "quality" in capsys.readouterr().err
