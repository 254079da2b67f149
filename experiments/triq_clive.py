"""TRIQ-R18 from scratch on LIVE In-the-Wild, 5-fold by image, then cross-dataset on BIQ2021
(issue 12).

The recipe of configs/quality/triq_r18_clive.yaml, run k trains on folds != k of a seeded 5-fold
split of the 627 CLIVE images (by image: no-reference data has one image per content) with
seed k and is evaluated on fold k (~125 images it never saw). Each fold's model is then scored
on all 300 BIQ2021 images (trained on one dataset, tested on another: the classic cross-dataset
protocol; SROCC and PLCC after the logistic mapping, since the two datasets' scales differ).
Reports SROCC / PLCC per fold, mean +- std over folds, and the training time.

    .venv/bin/python experiments/triq_clive.py [--folds 0 1 2 3 4] [--force] [--summary-only]

Folds may run in separate processes (``--folds 0 2 4`` and ``--folds 1 3``, each with
``OMP_NUM_THREADS=1``); a final ``--summary-only`` call collects the finished runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean, pstdev

from common import run, write_summary
from percepta.engine import launch
from percepta.jsonable import to_jsonable

CONFIG = "configs/quality/triq_r18_clive.yaml"
OUT = Path("runs/triq_clive")
CROSS = ["data.val.reader=biq2021", "data.val.table=biq2021", "data.val.split=all"]


def fold_run(k: int, force: bool) -> dict:
    """Train fold ``k`` (reused when finished) and add its BIQ2021 cross-dataset metrics."""
    result = run(CONFIG, f"triq_r18_clive_f{k}", [f"data.train.fold={k}", f"data.val.fold={k}",
                                                  f"seed={k}"], force=force)  # fmt: skip
    cross_file = Path(result["run_dir"]) / "cross_biq2021.json"
    if force or not cross_file.is_file():
        metrics, _ = launch.evaluate_checkpoint(
            str(Path(result["run_dir"]) / "checkpoints" / "last.pt"), CROSS
        )
        scalars = {k: v for k, v in to_jsonable(metrics).items() if not isinstance(v, (list, dict))}
        cross_file.write_text(json.dumps(scalars, indent=2))
    result["cross_biq2021"] = json.loads(cross_file.read_text())
    return result


def _finished(k: int) -> dict | None:
    d = Path("runs") / f"triq_r18_clive_f{k}"
    if not (d / "final_metrics.json").is_file() or not (d / "cross_biq2021.json").is_file():
        return None
    r = json.loads((d / "final_metrics.json").read_text())
    r["cross_biq2021"] = json.loads((d / "cross_biq2021.json").read_text())
    return r


def _plcc(m: dict) -> float:
    """PLCC after the 4-parameter logistic mapping (VQEG), the figure papers report."""
    return float(m.get("plcc_logistic4", m.get("plcc", float("nan"))))


def summarise(results: dict[int, dict]) -> None:
    rows, cols = [], {"srocc": [], "plcc": [], "x_srocc": [], "x_plcc": [], "s": []}
    for k, r in sorted(results.items()):
        m, x = r["metrics"], r["cross_biq2021"]
        vals = [float(m["srocc"]), _plcc(m), float(x["srocc"]), _plcc(x), r["train_seconds"]]
        for key, v in zip(cols, vals, strict=True):
            cols[key].append(v)
        rows.append([f"fold {k} (seed {k})", *[f"{v:.3f}" for v in vals[:4]], f"{vals[4]:.0f}"])
    if len(results) > 1:
        rows.append(
            ["mean +- std", *[f"{mean(cols[c]):.3f} +- {pstdev(cols[c]):.3f}" for c in
                              ("srocc", "plcc", "x_srocc", "x_plcc")], f"{mean(cols['s']):.0f}"]
        )  # fmt: skip
    write_summary(
        OUT,
        "TRIQ-R18 from scratch on CLIVE (5-fold by image) and cross-dataset on BIQ2021",
        ["run", "CLIVE SROCC", "CLIVE PLCC", "BIQ2021 SROCC", "BIQ2021 PLCC", "train s"],
        rows,
        {"runs": {str(k): v for k, v in results.items()}},
        curves=[("srocc", {f"f{k}": r["run_dir"] for k, r in results.items()}, True)],
        notes=[
            "PLCC: after the 4-parameter logistic mapping of predictions to human scores. "
            "BIQ2021: all 300 images, scored by each fold's model (trained on CLIVE only)."
        ],
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--force", action="store_true", help="retrain runs that already finished")
    ap.add_argument("--summary-only", action="store_true", help="only collect finished folds")
    args = ap.parse_args()
    if not args.summary_only:
        for k in args.folds:
            fold_run(k, args.force)
    results = {k: r for k in range(5) if (r := _finished(k)) is not None}
    if results:
        summarise(results)
        print((OUT / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
