"""CenterNet-R18 training step on CPU: share of target generation, images/s, loader headroom.

Prints JSON lines:
As everywhere in ``benchmarks/``, ``ratio = baseline / ours``.

- ``train_step_targets``: ours = target-generation seconds per step, baseline = the whole step;
  ``share = ours / baseline`` is the share of the step spent on targets (goal < 0.05).
- ``train_step_throughput``: ours = baseline = seconds per step; ``images_per_s`` is the
  training throughput.
- ``train_loader_vs_model``: ours = loader seconds per batch (2 workers, augmentation on),
  baseline = model step seconds per batch; ratio = how many times faster the loader delivers
  batches than the model consumes them (goal >= 3).

Usage: ``python benchmarks/bench_train_step.py [--quick] [--batch 16] [--size 256]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/, from any cwd
from _common import emit, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from percepta.data.coco import CocoDatasetConfig, build_coco_dataset
    from percepta.data.loader import build_train_loader
    from percepta.data.synthetic.detection import generate_detection
    from percepta.detection.centernet import (
        CenterNetConfig,
        build_centernet,
        time_train_step_breakdown,
    )

    batch = 4 if args.quick else args.batch
    n_batches = 3 if args.quick else 12
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        generate_detection(
            data,
            num_images=max(2 * batch * n_batches, 40),
            image_size=args.size,
            val_fraction=0.0,
            seed=0,
        )
        ds = build_coco_dataset(
            CocoDatasetConfig(ann_file=str(data / "annotations/instances_train.json")),
            root=".",
            train=True,
        )
        model = build_centernet(
            CenterNetConfig(
                num_classes=ds.num_classes, class_names=ds.class_names, input_size=args.size
            )
        )
        loader = build_train_loader(ds, batch, num_workers=args.workers)
        it = iter(loader)
        first = next(it)
        parts = time_train_step_breakdown(model, first, repeats=2 if args.quick else 5)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        loader_s = (time.perf_counter() - t0) / n_batches
        del it

    step = parts["step_s"]
    m = machine("torch")
    rows = [
        {
            "bench": "train_step_targets",
            "ours": parts["targets_s"],
            "baseline": step,
            "ratio": step / parts["targets_s"],
            "share": parts["targets_s"] / step,
            "batch": batch,
            "size": args.size,
            "machine": m,
        },
        {
            "bench": "train_step_throughput",
            "ours": step,
            "baseline": step,
            "ratio": 1.0,
            "images_per_s": batch / step,
            "batch": batch,
            "size": args.size,
            "machine": m,
        },
        {
            "bench": "train_loader_vs_model",
            "ours": loader_s,
            "baseline": step,
            "ratio": step / loader_s,
            "workers": args.workers,
            "batch": batch,
            "size": args.size,
            "machine": m,
        },
    ]
    for r in rows:
        emit(**r)


if __name__ == "__main__":
    main()
