"""Config -> train -> checkpoint -> eval/predict/load, through the CLI, on a tiny built-in set.

The tiny run memorises its 9 training images (40 AdamW steps, no augmentation) and is evaluated
on those same images, so a working model + evaluation reaches AP50 = 1.0 (measured: 1.0 after
40 and after 60 iterations; AP 0.46 / 0.69) while an untrained or broken one stays near 0. The
evaluator's AP is also checked against pycocotools' ``COCOeval`` (which percepta does not call:
it uses faster-coco-eval) on the same predictions.
"""

from __future__ import annotations

import json

import pytest
import torch

import percepta
from coco_reference import predict_as_coco_results, pycocotools_stats
from percepta import cli
from percepta.data.synthetic.detection import generate_detection

# Measured AP50 of the memorising run: 1.0 (40 iters). A broken loss, decode, box mapping or
# evaluation gives ~0; 0.7 leaves margin for CPU/library differences in the 40 steps.
MIN_AP50 = 0.7


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    generate_detection(data, num_images=12, image_size=64, val_fraction=0.25, seed=3, workers=1)
    cfg = root / "tiny.yaml"
    cfg.write_text(f"""
name: tiny
output_dir: {root / "runs"}
model: {{name: centernet, backbone: resnet18, input_size: 64, neck_channels: [32, 32, 32], head_conv: 16}}
data:
  root: {data}
  train: {{name: coco, ann_file: annotations/instances_train.json, augment: false}}
  val: {{name: coco, ann_file: annotations/instances_train.json, image_dir: train}}
evaluator: {{name: coco}}
train: {{max_iters: 40, batch_size: 8, log_period: 10, checkpoint_period: 20, progress: false,
         tensorboard: false, optimizer: {{name: adamw, lr: 0.003}},
         scheduler: {{name: cosine, warmup_iters: 5}}}}
""")
    assert cli.main(["train", str(cfg)]) == 0
    return root, data, cfg


def _predict_as_coco_results(ckpt, data) -> tuple[list[dict], dict]:
    """The loaded model on the training images (it memorised them), as COCO results."""
    return predict_as_coco_results(
        ckpt, data / "annotations" / "instances_train.json", data / "train"
    )


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


def test_eval_cli_json_reaches_measured_ap_and_agrees_with_pycocotools(tiny_run, capsys):
    root, data, _ = tiny_run
    ckpt = root / "runs" / "tiny" / "checkpoints" / "last.pt"
    assert cli.main(["eval", str(ckpt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["AP50"] >= MIN_AP50, out["AP50"]
    assert 0.0 < out["AP"] <= out["AP50"] <= 1.0  # AP@[.5:.95] averages stricter IoUs
    assert 0.0 <= out["oLRP"] < 0.8  # measured 0.55 (40 iters); an untrained model gives ~1
    # Same checkpoint, predictions made here image by image and scored by pycocotools: the
    # numbers `percepta eval` printed. Predictions agree with the batched eval path up to float
    # noise, so AP agrees to 1e-6 unless a score tie flips (none on this run).
    results, gt = _predict_as_coco_results(ckpt, data)
    ref = pycocotools_stats(gt, results)
    assert out["AP"] == pytest.approx(ref[0], abs=1e-6)
    assert out["AP50"] == pytest.approx(ref[1], abs=1e-6)


def test_evaluator_equals_pycocotools_on_the_same_predictions(tiny_run):
    """faster-coco-eval inside percepta vs pycocotools on identical inputs: the 12 stats agree
    to 1e-6 (both accumulate the same 101-point precision in float64)."""
    from percepta.detection.evaluation import AP_KEYS, evaluate_results

    root, data, _ = tiny_run
    results, gt = _predict_as_coco_results(root / "runs" / "tiny" / "checkpoints" / "last.pt", data)
    assert results, "the trained model predicts nothing"
    ours = evaluate_results(gt, results, olrp=False)
    ref = pycocotools_stats(gt, results)
    for key, want in zip(AP_KEYS, ref):
        want = float("nan") if want < 0 else want  # COCO's -1 (no GT in the range) is NaN here
        assert ours[key] == pytest.approx(want, abs=1e-6, nan_ok=True), key
    # an unrelated detector (boxes shifted by half the image) must score far lower
    shifted = [{**r, "bbox": [r["bbox"][0] + 32, *r["bbox"][1:]]} for r in results]
    assert evaluate_results(gt, shifted, olrp=False)["AP50"] < 0.5 * ours["AP50"]


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
    code = cli.main(
        ["predict", str(tmp_path / "other.pt"), str(data / "val"), "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "quality" in capsys.readouterr().err
