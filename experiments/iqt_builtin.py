"""IQT-R18 from scratch on the built-in full-reference distortion data (issue 12).

The recipe of configs/quality/iqt_r18_builtin.yaml, three runs: seed s evaluated on the
references of fold s (5 content-disjoint folds of the 60 reference scenes; the 12 held-out
references and their 600 distorted images are never trained on). Reports SROCC / PLCC per run
and their spread (runs/iqt_builtin/summary.md, .json, report.html).

    .venv/bin/python experiments/iqt_builtin.py [--seeds 0 1 2] [--force]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean, pstdev

from common import run, write_summary
from percepta.data.synthetic.quality import generate_quality

DATA = Path("data/builtin_quality")
CONFIG = "configs/quality/iqt_r18_builtin.yaml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--force", action="store_true", help="retrain runs that already finished")
    args = ap.parse_args()
    generate_quality(DATA, num_references=60, image_size=128, seed=0)
    results = {}
    for s in args.seeds:
        fold = [f"data.train.fold={s}", f"data.val.fold={s}", f"seed={s}"]
        results[s] = run(CONFIG, f"iqt_r18_builtin_s{s}", fold, force=args.force)
    rows, srocc = [], []
    for s, r in results.items():
        m = r["metrics"]
        srocc.append(float(m.get("srocc", float("nan"))))
        rows.append(
            [
                f"seed {s} / fold {s}",
                f"{m.get('srocc', float('nan')):.3f}",
                f"{m.get('plcc', float('nan')):.3f}",
                f"{m.get('rmse', float('nan')):.3f}",
                f"{r['train_seconds']:.0f}",
            ]
        )
    rows.append(["mean +- std", f"{mean(srocc):.3f} +- {pstdev(srocc):.3f}", "", "", ""])
    write_summary(
        Path("runs/iqt_builtin"),
        "IQT-R18 on the built-in distortion data",
        ["run", "SROCC", "PLCC", "RMSE", "train s"],
        rows,
        {"runs": {str(k): v for k, v in results.items()}},
        curves=[("srocc", {f"s{s}": r["run_dir"] for s, r in results.items()}, True)],
    )
    print(Path("runs/iqt_builtin/summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
