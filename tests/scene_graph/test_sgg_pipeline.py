"""The scene-graph path end to end through the CLI, as docs/scene_graphs.md shows it: built-in
relation data -> a detector -> MOTIFS / FREQ in PredCls -> eval -> predict (JSON + picture)."""

from __future__ import annotations

import json

import pytest

from percepta import cli

TINY_DET = [
    "model.backbone=test_resnet",
    "model.output_stride=32",
    "model.neck_channels=[16,8,8]",
    "model.head_conv=8",
    "train.max_iters=2",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.progress=false",
]
TINY_REL = [
    "model.obj_dim=16",
    "model.pooling_dim=16",
    "model.hidden_dim=8",
    "model.embed_dim=8",
    "model.roi_size=3",
    "train.max_iters=2",
    "train.batch_size=4",
    "train.progress=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def relation_run(tmp_path_factory):
    """Tiny relation data, a 2-iteration CenterNet and a 2-iteration MOTIFS PredCls run."""
    root = tmp_path_factory.mktemp("sgg")
    data, runs = root / "relations", root / "runs"
    assert (
        cli.main(
            [
                "data",
                "synth",
                "--task",
                "relations",
                "--out",
                str(data),
                "--num-images",
                "24",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    det = [
        "train",
        "configs/scene_graph/centernet_r18_relations.yaml",
        f"data.root={data}",
        f"output_dir={runs}",
        *TINY_DET,
    ]
    assert cli.main(det) == 0
    ckpt = runs / "centernet_r18_relations" / "checkpoints" / "last.pt"
    meta = json.loads((data / "synth_meta.json").read_text())
    val_im = int(meta.get("num_val_im", meta.get("summary", {}).get("num_val_im", 0)) or 0)
    rel = [
        f"data.root={data}",
        f"output_dir={runs}",
        f"model.detector_checkpoint={ckpt}",
        f"data.train.num_val_im={val_im}",
        *TINY_REL,
    ]
    assert cli.main(["train", "configs/scene_graph/motifs_predcls_builtin.yaml", *rel]) == 0
    return {"data": data, "runs": runs, "rel": rel, "det": ckpt}


def test_motifs_and_freq_train_and_evaluate(relation_run, capsys):
    runs, rel = relation_run["runs"], relation_run["rel"]
    metrics = [
        json.loads(x)
        for x in (runs / "motifs_predcls_builtin" / "metrics.jsonl").read_text().splitlines()
    ]
    final = [m["eval"] for m in metrics if "eval" in m][-1]
    assert 0.0 <= final["R@50"] <= 1.0 and 0.0 <= final["mR@50"] <= 1.0
    assert final["R@20"] <= final["R@50"] <= final["R@100"]
    assert cli.main(["train", "configs/scene_graph/freq_predcls_builtin.yaml", *rel]) == 0
    capsys.readouterr()
    ckpt = runs / "freq_predcls_builtin" / "checkpoints" / "last.pt"
    assert cli.main(["eval", str(ckpt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "mR@50" in json.dumps(out)


def test_predict_writes_graph_json_and_pictures(relation_run, tmp_path, capsys):
    data, runs = relation_run["data"], relation_run["runs"]
    ckpt = runs / "motifs_predcls_builtin" / "checkpoints" / "last.pt"
    ann = data / "annotations" / "instances_test.json"
    test_images = sorted(
        data / "images" / im["file_name"] for im in json.loads(ann.read_text())["images"]
    )[:4]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in test_images:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / test_images[3].name).write_bytes(b"not an image")  # a listed image, corrupt
    # a PredCls model needs the objects
    assert cli.main(["predict", str(ckpt), str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "--coco" in capsys.readouterr().err
    out = tmp_path / "graphs"
    assert cli.main(["predict", str(ckpt), str(folder), "--out", str(out), "--coco", str(ann)]) == 0
    text = capsys.readouterr().out
    assert "3 images" in text and "1 files skipped" in text
    records = json.loads((out / "scene_graphs.json").read_text())
    gt = json.loads(ann.read_text())
    for rec in records:
        n_gt = sum(a["image_id"] == rec["image_id"] for a in gt["annotations"])
        assert len(rec["objects"]) == n_gt  # PredCls: exactly the given objects
        scores = [r["score"] for r in rec["relations"]]
        assert scores == sorted(scores, reverse=True)
        assert len(rec["relations"]) == min(100, n_gt * (n_gt - 1))
    assert len(list((out / "images").glob("*.png"))) == 3
