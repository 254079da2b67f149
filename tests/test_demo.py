"""`percepta demo --quick`: the whole main job runs end to end and writes outputs whose values
agree with an independent re-evaluation of the checkpoint it wrote (pycocotools, which percepta
does not call) and with each other."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from coco_reference import predict_as_coco_results, pycocotools_stats
from percepta import cli

NAMES = ["circle", "square", "triangle", "star", "arrow", "cross"]


def _reevaluate(ckpt, data) -> list[float]:
    """Load the written checkpoint, predict every val image one by one, score with pycocotools."""
    results, gt = predict_as_coco_results(
        ckpt, data / "annotations" / "instances_val.json", data / "val"
    )
    return pycocotools_stats(gt, results)


def _assert_png(data: bytes, min_side: int) -> None:
    img = Image.open(io.BytesIO(data))
    img.load()  # decodes the whole file: a truncated or empty PNG fails here
    assert img.format == "PNG" and min(img.size) >= min_side, img.size


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo must find its config from anywhere
    from percepta import demo

    # log every 10 iterations (the config logs every 50) so the loss curve has several points
    monkeypatch.setattr(demo, "QUICK_OVERRIDES", [*demo.QUICK_OVERRIDES, "train.log_period=10"])
    out = tmp_path / "runs" / "demo"
    data = tmp_path / "builtin"
    code = cli.main(["demo", "--quick", "--out", str(out), "--data-dir", str(data)])
    assert code == 0
    _check_demo_outputs(out, data)
    _check_quality_outputs(out, tmp_path / "builtin_quality")


def _check_demo_outputs(out, data) -> None:
    result = json.loads((out / "metrics.json").read_text())
    m = result["metrics"]
    for key in ("AP", "AP50", "AP75", "oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn"):
        assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0, (key, m.get(key))
    # AP@[.5:.95] averages AP over IoU 0.5..0.95: it lies between AP75-ish and AP50
    assert m["AP75"] <= m["AP50"] and m["AP"] <= m["AP50"]
    # the quick run (30 iterations) is too short for a meaningful AP (measured AP50 0.016), but
    # it must have learnt: the mean training loss of iterations 21-30 is well below that of
    # iterations 1-10 (measured: 4.35, 3.25, 2.84 for iterations 1-10, 11-20, 21-30)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses

    # per class: the six classes in label order; COCO's AP is the mean of the per-class APs
    per_class = result["per_class"]
    assert [r["name"] for r in per_class] == NAMES
    assert [r["category_id"] for r in per_class] == [1, 2, 3, 4, 5, 6]
    aps = [r["AP"] for r in per_class if r["AP"] is not None and not math.isnan(r["AP"])]
    assert all(0.0 <= a <= 1.0 for a in aps) and aps
    assert m["AP"] == pytest.approx(sum(aps) / len(aps), abs=1e-6)

    # independent re-evaluation of the checkpoint the demo wrote: same AP / AP50. Predictions
    # here are made image by image (the demo's evaluation batches them), which changes scores
    # by float noise only; 1e-6 absolute on AP.
    ckpt = out / "checkpoints" / "last.pt"
    ref = _reevaluate(ckpt, data)
    assert m["AP"] == pytest.approx(ref[0], abs=1e-6)
    assert m["AP50"] == pytest.approx(ref[1], abs=1e-6)

    cfg = result["config"]
    assert cfg["train"]["max_iters"] == 30 and cfg["model"]["name"] == "centernet"
    assert 0 < result["train_seconds"] <= result["total_seconds"]

    parity = result["onnx"]["parity"]
    assert parity["ok"] is True and parity["labels_equal"] is True
    assert parity["max_box_diff"] <= parity["box_tol"]
    assert parity["max_score_diff"] <= parity["score_tol"]
    assert (out / "model.onnx").stat().st_size > 1_000_000  # a ResNet-18 graph, not a stub

    # the example images: the first 8 val images, enlarged to >= 384 px, valid PNGs
    pngs = sorted((out / "predictions").glob("*.png"))
    val_stems = sorted(p.stem for p in (data / "val").glob("*.png"))[:8]
    assert [p.stem for p in pngs] == val_stems
    for p in pngs:
        _assert_png(p.read_bytes(), 384)

    html = (out / "report.html").read_text()
    assert "Per class" in html
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(embedded) >= 1 + len(pngs)  # the loss curve (+ AP curve when >1 eval), gallery
    for b64 in embedded:
        _assert_png(base64.b64decode(b64), 16)
    assert f"<td>AP</td><td>{m['AP']:.4f}</td>" in html  # the metric table shows this AP
    # the run in one picture: 3 detections, 2 scene graphs, 2 plots, 1 overlay = 2 rows of 4
    with Image.open(out / "gallery.png") as gallery:
        assert gallery.height == 48 + 2 * (260 + 48) and gallery.width >= 4 * 260

    # the scene-graph part: three runs on the demo's frozen detector, scored on the test split
    sgg = result["scene_graphs"]["runs"]
    assert set(sgg) == {"freq_predcls", "motifs_predcls", "motifs_sgdet"}
    assert [sgg[k]["mode"] for k in ("freq_predcls", "motifs_predcls", "motifs_sgdet")] == [
        "predcls",
        "predcls",
        "sgdet",
    ]
    for run in sgg.values():
        r = run["metrics"]
        assert all(0.0 <= r[k] <= 1.0 for k in ("R@20", "R@50", "R@100", "mR@50"))
        assert r["R@20"] <= r["R@50"] <= r["R@100"]  # recall can only grow with K
        assert run["seconds"] > 0
    for name in ("freq_predcls", "motifs_predcls", "motifs_sgdet"):
        assert (out / "scene_graphs" / name / "checkpoints" / "last.pt").is_file()
    graphs = sorted((out / "scene_graphs" / "graphs").glob("*.png"))
    assert len(graphs) == 4
    for p in graphs:
        _assert_png(p.read_bytes(), 300)
    assert "Scene graphs (built-in relation data" in html
    assert f"{sgg['motifs_predcls']['metrics']['R@50']:.4f}" in html


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_quality_outputs(out, qdata) -> None:
    """The image-quality part: IQT trained on the quick built-in distortion data (5 references),
    scored on the held-out reference of fold 0; values re-checked from the files it wrote."""
    result = json.loads((out / "metrics.json").read_text())
    q = result["quality"]
    assert "examples" not in q  # the gallery stays in the report
    m = q["metrics"]
    for key in ("srocc", "krocc", "plcc", "plcc_logistic4"):
        assert isinstance(m[key], float) and -1.0 <= m[key] <= 1.0, (key, m.get(key))
    for key in ("rmse", "rmse_logistic4"):
        assert isinstance(m[key], float) and math.isfinite(m[key]) and m[key] >= 0.0, key
    run = q["runs"]["iqt_r18"]
    assert run["model"] == "iqt" and run["backbone"] == "resnet18" and run["iterations"] == 3
    assert run["seconds"] > 0 and q["seconds"] >= run["seconds"]

    # the quick data: 5 references x 10 distortions x 5 levels; 5 folds -> 1 held-out reference
    # whose 50 images are all scored (read the generated table ourselves)
    table = _read_csv(qdata / "quality.csv")
    assert len(table) == 250 and q["data"]["images"] == 250
    mos_of = {r["image"]: float(r["score"]) for r in table}
    rows = _read_csv(out / "quality" / "heldout_predictions.csv")
    refs = {r["ref_id"] for r in rows}
    assert len(refs) == 1 and sorted(refs) == q["data"]["held_out_references"]
    assert len(rows) == 50 == m["n"] == q["data"]["held_out_images"]
    assert {(r["distortion"], r["level"]) for r in rows} == {
        (r["distortion"], r["level"]) for r in table if r["ref_id"] in refs
    }
    for r in rows:
        assert float(r["mos"]) == pytest.approx(mos_of[r["image"]], abs=1e-9)

    # the saved per-image predictions reproduce the evaluator's metrics (scipy / numpy here).
    # The csv holds the table's exact scores, the evaluator saw them as float32 targets (error
    # <= 3e-7 on a 1-5 scale): 1e-6 on PLCC / RMSE; SROCC (ranks) does not see the rounding.
    pred = np.array([float(r["prediction"]) for r in rows])
    mos = np.array([float(r["mos"]) for r in rows])
    assert m["srocc"] == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-9)
    assert m["plcc"] == pytest.approx(np.corrcoef(pred, mos)[0, 1], abs=1e-6)
    assert m["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - mos) ** 2))), abs=1e-6)

    # independent re-scoring of two held-out images with the written checkpoint (one image at a
    # time, where the evaluation batched them: float noise only; 1e-4 absolute on a 1-5 scale)
    from percepta.quality import load

    predictor = load(out / "quality" / "iqt_r18" / "checkpoints" / "last.pt", "cpu")
    for r in (rows[0], rows[-1]):
        score = predictor(qdata / r["image"], qdata / r["reference"])
        assert score == pytest.approx(float(r["prediction"]), abs=1e-4), r["image"]

    # the scatter plot and the attention overlays (distorted image 256 px over its overlay)
    scatter = out / "quality" / "plots" / "heldout_scatter.png"
    assert q["plot"] == str(scatter)
    _assert_png(scatter.read_bytes(), 300)
    overlays = sorted((out / "quality" / "attention").glob("*.png"))
    assert len(overlays) == 4
    for p in overlays:
        img = Image.open(p)
        img.load()
        assert img.size == (256, 512), (p, img.size)
        assert p.stem in {r["image"].split("/")[-1][:-4] for r in rows}

    html = (out / "report.html").read_text()
    assert "Image quality (built-in full-reference distortion data" in html
    assert f"<td>{m['srocc']:.4f}</td>" in html and f"<td>{m['plcc']:.4f}</td>" in html
    # each overlay's caption: the true score of its image and a prediction that agrees with
    # the evaluation's (the caption rounds to 0.01)
    by_stem = {r["image"].split("/")[-1][:-4]: r for r in rows}
    figures = re.findall(r'alt="(ref\d+_[a-z0-9_]+)\.png"><figcaption>([^<]*)</figcaption>', html)
    assert sorted(stem for stem, _ in figures) == [p.stem for p in overlays]
    for stem, caption in figures:
        found = re.search(r"\(ref (ref\d+)\): true ([\d.-]+), predicted ([\d.-]+)$", caption)
        assert found, caption
        r = by_stem[stem]
        assert found.group(1) == r["ref_id"]
        assert float(found.group(2)) == pytest.approx(float(r["mos"]), abs=0.0051)
        assert float(found.group(3)) == pytest.approx(float(r["prediction"]), abs=0.0051)
