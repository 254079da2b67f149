"""The shipped ranking-loss presets train and evaluate through ``percepta train`` (issue 13).

Each preset (RS-R-CNN, RS-CenterNet) runs a few iterations on 12 built-in images with its own
model section, so a renamed option or a broken loss path fails here; the run must log the RS
terms, keep the box term at the value of ranking + sorting (value-based balancing) and end with
the COCO evaluation. The experiment that trains them fully is experiments/ranking_detectors.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from percepta import cli
from percepta.data.synthetic.detection import generate_detection

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "train.max_iters=3",
    "train.batch_size=4",
    "train.log_period=1",
    "train.checkpoint_period=0",
    "train.num_workers=0",
    "train.progress=false",
    "train.tensorboard=false",
    "train.amp=false",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ranking_presets") / "data"
    generate_detection(root, num_images=12, image_size=128, val_fraction=0.25, seed=5, workers=1)
    return root


@pytest.mark.parametrize(
    "preset,prefixes",
    [
        ("rs_faster_rcnn_r18_builtin.yaml", ("loss_rpn_", "loss_roi_")),
        ("rs_centernet_r18_builtin.yaml", ("loss_",)),
    ],
)
def test_ranking_preset_trains_and_evaluates(data, tmp_path, preset, prefixes):
    cfg = REPO / "configs" / "detection" / preset
    out = tmp_path / "runs"
    args = ["train", str(cfg), f"data.root={data}", f"output_dir={out}", "name=rs", *SMALL]
    assert cli.main(args) == 0
    lines = [json.loads(x) for x in (out / "rs" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "eval" not in x]
    assert len(steps) == 3
    for p in prefixes:
        for x in steps:
            rank, sort, box = x[f"{p}rank"], x[f"{p}sort"], x[f"{p}box"]
            assert abs(box - (rank + sort)) <= 1e-5 * max(1.0, rank + sort)  # value-balanced
    assert not any(k.startswith(("loss_classifier", "loss_heatmap")) for k in steps[0])
    final = [x for x in lines if "eval" in x][-1]["eval"]
    assert 0.0 <= final["AP"] <= 1.0 and 0.0 <= final["oLRP"] <= 1.0
