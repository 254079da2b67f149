"""Benchmark: detection evaluation speed (prints JSON lines).

Workload: a deterministic synthetic COCO set, 5,000 images x 100 detections (``--quick``: 200
images), ~7 GT boxes per image (Poisson), 80 long-tailed classes, 1% crowd regions; detections
are jittered copies of GT boxes (some with a wrong class) plus background boxes.

Lines:
* ``coco_ap``: faster-coco-eval (ours) vs pycocotools (baseline), the same steps for both
  (``loadRes`` of the in-memory results list, ``evaluate``, ``accumulate``, ``summarize``),
  with the GT index built beforehand; the 12 stats must agree.
* ``olrp_overhead``: ``percepta.detection.evaluation.evaluate_results`` with optimal LRP
  (ours) vs without it (baseline, AP family only), from the same validated arrays.

Usage: ``python benchmarks/bench_det_eval.py [--quick] [--images N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/, from any cwd
from _common import emit, machine  # noqa: E402


def make_synthetic(
    n_images: int,
    dets_per_image: int = 100,
    mean_gt: float = 7.0,
    n_classes: int = 80,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """Deterministic COCO ground truth + results list."""
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    cls_p = 1.0 / (np.arange(n_classes) + 1.0) ** 0.8
    cls_p /= cls_p.sum()
    images, anns, results = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"{img_id:06d}.jpg"})
        n = int(rng.poisson(mean_gt))
        w = np.exp(rng.uniform(np.log(8), np.log(320), n))
        h = np.clip(w * np.exp(rng.normal(0, 0.4, n)), 4, H - 1)
        x = rng.uniform(0, W - w)
        y = rng.uniform(0, H - h)
        c = rng.choice(n_classes, n, p=cls_p) + 1
        crowd = rng.random(n) < 0.01
        for j in range(n):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": int(c[j]),
                    "bbox": [float(x[j]), float(y[j]), float(w[j]), float(h[j])],
                    "area": float(w[j] * h[j]),
                    "iscrowd": int(crowd[j]),
                }
            )
        # detections: 1-4 jittered copies per GT, then background boxes up to dets_per_image
        copies = rng.integers(1, 5, n)
        src = np.repeat(np.arange(n), copies)[:dets_per_image]
        k = src.size
        jit = rng.normal(0, 0.12, (k, 4))
        dx = x[src] + jit[:, 0] * w[src]
        dy = y[src] + jit[:, 1] * h[src]
        dw = w[src] * np.exp(jit[:, 2])
        dh = h[src] * np.exp(jit[:, 3])
        dc = np.where(rng.random(k) < 0.9, c[src], rng.integers(1, n_classes + 1, k))
        ds = rng.beta(5, 2, k)
        nb = dets_per_image - k
        bw = np.exp(rng.uniform(np.log(8), np.log(320), nb))
        bh = np.clip(bw * np.exp(rng.normal(0, 0.4, nb)), 4, H - 1)
        bx, by = rng.uniform(0, W - bw), rng.uniform(0, H - bh)
        bc = np.where(
            (rng.random(nb) < 0.5) & (n > 0),
            rng.choice(c, nb) if n else 1,
            rng.choice(n_classes, nb, p=cls_p) + 1,
        )
        bs = rng.beta(2, 5, nb)
        for xx, yy, ww, hh, cc, ss in zip(
            np.r_[dx, bx], np.r_[dy, by], np.r_[dw, bw], np.r_[dh, bh], np.r_[dc, bc], np.r_[ds, bs]
        ):
            results.append(
                {
                    "image_id": img_id,
                    "category_id": int(cc),
                    "bbox": [
                        round(float(xx), 2),
                        round(float(yy), 2),
                        round(float(ww), 2),
                        round(float(hh), 2),
                    ],
                    "score": round(float(ss), 5),
                }
            )
    cats = [{"id": i, "name": f"class{i}"} for i in range(1, n_classes + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, results


def _time(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_coco(lib: str, gt: dict, results: list[dict]) -> np.ndarray:
    """loadRes + evaluate + accumulate + summarize with one library (GT index prebuilt)."""
    if lib == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        res = copy.deepcopy(results)
        t0 = time.perf_counter()
        coco_dt = coco_gt.loadRes(res)
        ev = Eval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        elapsed = time.perf_counter() - t0
    return elapsed, np.asarray(ev.stats[:12], dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke size (200 images)")
    ap.add_argument("--images", type=int, default=None, help="number of images (default 5000)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="repeats of the fast measurements (best kept)"
    )
    args = ap.parse_args(argv)
    n_images = args.images or (200 if args.quick else 5000)
    gt, results = make_synthetic(n_images)
    info = machine("numpy", "faster_coco_eval", "pycocotools")
    workload = {
        "images": n_images,
        "detections": len(results),
        "gt_boxes": len(gt["annotations"]),
        "classes": 80,
    }

    t_fast, s_fast = min(
        (run_coco("faster_coco_eval", gt, results) for _ in range(args.repeat)), key=lambda r: r[0]
    )
    t_pyc, s_pyc = run_coco("pycocotools", gt, results)
    emit(
        "det_eval.coco_ap",
        round(t_fast, 4),
        round(t_pyc, 4),
        ratio=round(t_pyc / t_fast, 4),
        ours_impl="faster-coco-eval",
        baseline_impl="pycocotools",
        stats_max_abs_diff=float(np.abs(s_fast - s_pyc).max()),
        workload=workload,
        machine=info,
    )

    from percepta.detection.coco_results import load_ground_truth, results_to_array
    from percepta.detection.evaluation import evaluate_results
    from percepta.detection.olrp import optimal_lrp

    g = load_ground_truth(gt)
    rows = results_to_array(results, g)
    evaluate_results(g, rows[:100], olrp=False)  # warm-up: builds the GT index once (cached)
    t_ap = t_all = float("inf")
    for _ in range(args.repeat):  # interleaved, best of each: the machine may be shared
        t, _ = _time(lambda: evaluate_results(g, rows, olrp=False))
        t_ap = min(t_ap, t)
        t, m = _time(lambda: evaluate_results(g, rows, olrp=True))
        t_all = min(t_all, t)
    t_lrp, _ = _time(
        lambda: optimal_lrp(
            g.ann_image_ids,
            g.ann_cat_ids,
            g.ann_boxes,
            g.ann_areas,
            g.ann_crowd,
            rows[:, 0].astype(np.int64),
            rows[:, 6].astype(np.int64),
            rows[:, 1:5],
            rows[:, 5],
            g.image_ids,
            g.cat_ids,
        ),
        args.repeat,
    )
    emit(
        "det_eval.olrp_overhead",
        round(t_all, 4),
        round(t_ap, 4),
        ratio=round(t_ap / t_all, 4),
        ours_impl="percepta AP + oLRP",
        baseline_impl="percepta AP only (faster-coco-eval)",
        olrp_alone_s=round(t_lrp, 4),
        AP=round(m["AP"], 4),
        oLRP=round(m["oLRP"], 4),
        workload=workload,
        machine=info,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
