"""Scene graphs on the built-in controlled-bias relation data (issue 11).

1. the data: ``percepta data synth --task relations`` with 2,000 images (1,200 train, 300 val,
   500 test at 128 px; long-tailed predicates, held-out zero-shot triplets);
2. the frozen detectors: CenterNet-R18 (configs/scene_graph/centernet_r18_relations.yaml) and
   Faster R-CNN-R18-FPN (configs/detection/faster_rcnn_r18_builtin.yaml on the same data);
3. PredCls: the FREQ baseline and MOTIFS, seeds 0, 1, 2 each; SGCls and SGDet (CenterNet and
   Faster R-CNN) MOTIFS, seed 0. Every relation model is evaluated on the 500 test images.

Reports R@K, mR@K, zR@K per run and the MOTIFS / FREQ mR@50 ratio per seed
(runs/sgg_builtin/summary.md, .json, report.html). Finished runs are reused.

    .venv/bin/python experiments/sgg_builtin.py [--seeds 0 1 2] [--force]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean, pstdev

from common import adopt, run, write_summary
from percepta.data.synthetic.relations import generate_relations

DATA = Path("data/relations")
DETECTORS = {
    "centernet": (
        "configs/scene_graph/centernet_r18_relations.yaml",
        "centernet_r18_relations",
        [],
    ),
    "faster_rcnn": (
        "configs/detection/faster_rcnn_r18_builtin.yaml",
        "faster_rcnn_r18_relations",
        [f"data.root={DATA}", "train.max_iters=500"],
    ),
}


def _ckpt(name: str) -> str:
    return f"runs/{name}/checkpoints/last.pt"


def _row(label: str, r: dict, ks=(20, 50, 100)) -> list:
    m = r["metrics"]
    return [
        label,
        *[m.get(f"R@{k}", float("nan")) for k in ks],
        *[m.get(f"mR@{k}", float("nan")) for k in ks],
        m.get("zR@50", float("nan")),
        m.get("zR@100", float("nan")),
        f"{r['train_seconds']:.0f}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--force", action="store_true", help="retrain runs that already finished")
    ap.add_argument("--skip-faster-rcnn", action="store_true")
    args = ap.parse_args()
    generate_relations(DATA, num_images=2000, progress=True)
    det = {}
    for key, (config, name, overrides) in DETECTORS.items():
        if key == "faster_rcnn" and args.skip_faster_rcnn:
            continue
        adopt(config, name, overrides)
        det[key] = run(config, name, overrides, force=args.force)
    results, rows = {}, []
    for s in args.seeds:
        for pred in ("freq", "motifs"):
            cfg = f"configs/scene_graph/{pred}_predcls_builtin.yaml"
            results[f"{pred}_predcls_s{s}"] = run(cfg, f"{pred}_predcls_s{s}", [f"seed={s}"])
    for mode in ("sgcls", "sgdet"):
        cfg = f"configs/scene_graph/motifs_{mode}_builtin.yaml"
        results[f"motifs_{mode}_centernet_s0"] = run(cfg, f"motifs_{mode}_centernet_s0")
    if "faster_rcnn" in det:
        results["motifs_sgdet_faster_rcnn_s0"] = run(
            "configs/scene_graph/motifs_sgdet_builtin.yaml",
            "motifs_sgdet_faster_rcnn_s0",
            [f"model.detector_checkpoint={_ckpt(DETECTORS['faster_rcnn'][1])}"],
        )
    for name, r in results.items():
        rows.append(_row(name, r))
    ratios = [
        results[f"motifs_predcls_s{s}"]["metrics"]["mR@50"]
        / results[f"freq_predcls_s{s}"]["metrics"]["mR@50"]
        for s in args.seeds
    ]
    notes = [
        "MOTIFS / FREQ mR@50 in PredCls per seed: "
        + ", ".join(f"s{s} {r:.2f}x" for s, r in zip(args.seeds, ratios))
        + f" (mean {mean(ratios):.2f}x +- {pstdev(ratios):.2f})",
        "Detectors (val AP50): "
        + ", ".join(f"{k} {v['metrics'].get('AP50', float('nan')):.3f}" for k, v in det.items()),
    ]
    ks = ["R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "zR@50", "zR@100", "train s"]
    write_summary(
        Path("runs/sgg_builtin"),
        "Scene graphs on the built-in relation data (test split, 500 images)",
        ["run", *ks],
        rows,
        {"runs": results, "detectors": det, "motifs_over_freq_mR50": ratios},
        notes=notes,
    )
    print(Path("runs/sgg_builtin/summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
