"""End-to-end CPU inference of CenterNet-R18: onnxruntime with the decode in the graph vs PyTorch.

ours     = ``OnnxPredictor(images)``: letterbox (``CenterNet.preprocess``), onnxruntime run of the
           exported graph (normalisation, network, 3x3 max-pool peaks, top-K, boxes), then
           ``CenterNet.postprocess`` (threshold, rescale, clip).
baseline = ``model.eval()(images)`` in PyTorch eager (``torch.inference_mode``): the same steps
           with the decode in Python/PyTorch.

Both use the same number of threads (``--threads``, default ``torch.get_num_threads()``), the same
uint8 images (built-in-style shapes, already ``size x size`` so neither resizes) and a randomly
initialised model with 80 classes (COCO's head size; speed does not depend on the weights; a
fresh model's flat heat map keeps all K = 100 detections, the costliest post-processing case;
parity is checked by ``tests/export`` on a model with real peaks, not here).
Each figure is the median seconds per batch over ``--repeats`` runs after one warm-up run.

Prints one JSON line per batch size: ``{"bench": "onnx_inference_b<B>", "ours": s_per_batch,
"baseline": s_per_batch, "ratio": baseline/ours, ...}`` plus the graph-only / network-only
times and the machine (with the load average before and after, since a shared
machine skews timings). Goal: ratio >= 1.3.

Usage: ``python benchmarks/bench_onnx_inference.py [--quick] [--size 512] [--batches 1 8]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/, from any cwd
from _common import emit, machine  # noqa: E402


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function; the functions take turns within every repeat so that
    a fluctuating machine load hits all of them alike."""
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke size: 128 px, batches 1 and 2")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0 = torch.get_num_threads()")
    ap.add_argument("--classes", type=int, default=80)
    args = ap.parse_args()
    size, batches, repeats = args.size, args.batches, args.repeats
    if args.quick:
        size, batches, repeats = 128, [1, 2], 2
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)

    from percepta.detection.centernet import CenterNetConfig, build_centernet
    from percepta.export.onnx import export_onnx, parity_images
    from percepta.export.runtime import OnnxPredictor

    torch.manual_seed(0)
    model = build_centernet(
        CenterNetConfig(backbone="resnet18", num_classes=args.classes, input_size=size)
    ).eval()
    base_images = parity_images(size, n=1)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "centernet_r18.onnx", decode="full", top_k=100)
        export_s = time.perf_counter() - t0
        predictor = OnnxPredictor(path, threads=threads)
        for b in batches:
            images = base_images[0].unsqueeze(0).repeat(b, 1, 1, 1)
            images[1::2] = images[1::2].flip(-1)  # not all identical
            x = images.float()
            with torch.inference_mode():
                t = timed(
                    {
                        "ours": lambda: predictor(images),
                        "baseline": lambda: model(images),
                        "graph": lambda: predictor.run_graph(x / 255),
                        "heads": lambda: model.forward_heads(x),
                    },
                    repeats,
                )
            emit(
                f"onnx_inference_b{b}",
                t["ours"],
                t["baseline"],
                batch=b,
                size=size,
                classes=args.classes,
                ours_graph_only=t["graph"],
                baseline_network_only=t["heads"],
                export_s=round(export_s, 2),
                loadavg_1m_before=load_before,
                machine=machine("torch", "onnxruntime", threads=threads),
            )


if __name__ == "__main__":
    main()
