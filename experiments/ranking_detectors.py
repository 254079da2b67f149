"""Ranking losses without loss-weight tuning vs the tuned detectors (issue 13), 3 seeds each.

Four presets on the built-in detection data (4,000 shapes images at 128 px, 400 for
validation), each trained with seeds 0, 1, 2 and evaluated once at the end (COCO AP, AP50 and
optimal LRP on the 400 validation images):

* ``ce_rcnn``: Faster R-CNN R18-FPN with torchvision's cross-entropy, samplers and loss weights
  (configs/detection/faster_rcnn_r18_builtin.yaml);
* ``rs_rcnn``: the same network with Rank & Sort in the RPN and the RoI head, no samplers, GIoU,
  value-based balancing (configs/detection/rs_faster_rcnn_r18_builtin.yaml);
* ``focal_centernet``: CenterNet R18 with the focal loss and the 1 / 0.1 / 1 weights
  (configs/detection/centernet_r18_builtin.yaml);
* ``rs_centernet``: the same with Rank & Sort on the heat-map peaks
  (configs/detection/rs_centernet_r18_builtin.yaml).

Each RS preset keeps its baseline's optimizer, learning rate, schedule, batch and iterations:
nothing was tuned for the ranking loss. Reports every seed, mean +- std, and the per-seed
difference RS - baseline (whether its sign holds over the seeds).

    .venv/bin/python experiments/ranking_detectors.py [--only rs_rcnn ...] [--seeds 0 1 2]
        [--force] [--summary-only]

Runs may be split over processes (``--only ce_rcnn rs_rcnn`` and ``--only focal_centernet
rs_centernet``, each with ``OMP_NUM_THREADS=1``); a final ``--summary-only`` collects them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean, pstdev

from common import adopt, builtin_data, run, write_summary

OUT = Path("runs/ranking_detectors")
PRESETS = {
    "ce_rcnn": "configs/detection/faster_rcnn_r18_builtin.yaml",
    "rs_rcnn": "configs/detection/rs_faster_rcnn_r18_builtin.yaml",
    "focal_centernet": "configs/detection/centernet_r18_builtin.yaml",
    "rs_centernet": "configs/detection/rs_centernet_r18_builtin.yaml",
}
PAIRS = (("rs_rcnn", "ce_rcnn"), ("rs_centernet", "focal_centernet"))
METRICS = ("AP", "AP50", "oLRP")  # oLRP: lower is better


def run_name(key: str, seed: int) -> str:
    return f"ranking_{key}_s{seed}"


def train(key: str, seed: int, force: bool) -> dict:
    overrides = [f"seed={seed}", "train.progress=false"]
    adopt(PRESETS[key], run_name(key, seed), overrides)  # a run trained with `percepta train`
    return run(PRESETS[key], run_name(key, seed), overrides, force=force)


def _finished(key: str, seed: int) -> dict | None:
    f = Path("runs") / run_name(key, seed) / "final_metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _stat(vals: list[float]) -> str:
    return f"{mean(vals):.3f} +- {pstdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def plot_seeds(payload: dict, out: Path) -> Path | None:
    """AP, AP50 and oLRP of every preset, one dot per seed and a bar at the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PRESETS if k in payload]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    colours = ["#8da0cb", "#fc8d62", "#8da0cb", "#fc8d62"]
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, key in enumerate(keys):
            vals = payload[key][metric]
            ax.bar(i, mean(vals), color=colours[list(PRESETS).index(key)], alpha=0.7)
            ax.scatter([i] * len(vals), vals, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric}{' (lower is better)' if metric == 'oLRP' else ''}")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("baseline (blue) vs ranking loss (orange), dots: seeds", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def summarise(results: dict[tuple[str, int], dict]) -> None:
    rows, payload = [], {}
    for key in PRESETS:
        seeds = sorted(s for k, s in results if k == key)
        if not seeds:
            continue
        cols: dict[str, list[float]] = {m: [] for m in (*METRICS, "s")}
        for s in seeds:
            r = results[(key, s)]
            vals = [float(r["metrics"].get(m, float("nan"))) for m in METRICS]
            vals.append(float(r["train_seconds"]))
            for m, v in zip(cols, vals, strict=True):
                cols[m].append(v)
            rows.append([f"{key} seed {s}", *[f"{v:.3f}" for v in vals[:3]], f"{vals[3]:.0f}"])
        if len(seeds) > 1:
            rows.append([f"{key} mean +- std", *[_stat(cols[m]) for m in METRICS],
                         f"{mean(cols['s']):.0f}"])  # fmt: skip
        payload[key] = {"seeds": seeds, **cols}
    for rs, base in PAIRS:
        common_seeds = sorted(s for k, s in results if k == rs and (base, s) in results)
        if not common_seeds:
            continue
        diffs = {
            m: [
                float(results[(rs, s)]["metrics"][m]) - float(results[(base, s)]["metrics"][m])
                for s in common_seeds
            ]
            for m in METRICS
        }
        signs = {m: "same sign" if len({d > 0 for d in v}) == 1 else "sign flips"
                 for m, v in diffs.items()}  # fmt: skip
        rows.append([f"{rs} - {base} (seeds {common_seeds})",
                     *[f"{' / '.join(f'{d:+.3f}' for d in diffs[m])} ({signs[m]})"
                       for m in METRICS], ""])  # fmt: skip
        payload[f"{rs}-{base}"] = diffs
    png = plot_seeds(payload, OUT / "seeds.png")
    write_summary(
        OUT,
        "Ranking losses with no loss-weight tuning vs tuned baselines (built-in data, 3 seeds)",
        ["run", "AP", "AP50", "oLRP (lower better)", "train s"],
        rows,
        {"runs": {f"{k}_s{s}": v for (k, s), v in results.items()}, "summary": payload},
        gallery=[(png, "AP, AP50 and oLRP per preset and seed")] if png else [],
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(PRESETS), default=list(PRESETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--force", action="store_true", help="retrain runs that already finished")
    ap.add_argument("--summary-only", action="store_true", help="only collect finished runs")
    args = ap.parse_args()
    results: dict[tuple[str, int], dict] = {}
    if not args.summary_only:
        builtin_data()
        for seed in args.seeds:  # seed-major: a partial experiment still pairs its models
            for key in args.only:
                results[(key, seed)] = train(key, seed, args.force)
    for key in PRESETS:
        for seed in args.seeds:
            if (key, seed) not in results and (done := _finished(key, seed)) is not None:
                results[(key, seed)] = done
    summarise(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
