"""``percepta demo`` (``make demo``): the main job end to end on the built-in data.

1. generate the built-in detection dataset (COCO json + PNG; skipped when already there),
2. validate it with the same checker as ``percepta data check``,
3. train CenterNet-R18 on CPU (``configs/detection/centernet_r18_builtin.yaml``),
4. evaluate on the validation split (COCO AP family + optimal LRP, per class),
5. export to ONNX with the whole decode in the graph and check parity with PyTorch,
6. predict on a few held-out images and draw the boxes,
7. scene graphs on the built-in relation data with that detector frozen: the FREQ baseline and
   MOTIFS in PredCls, MOTIFS in SGDet (:mod:`percepta.demo_scene_graph`),
8. image quality on the built-in full-reference distortion data: IQT-R18 trained from scratch,
   scored on held-out references (SROCC/KROCC/PLCC/RMSE), a scatter plot and attention overlays
   (:mod:`percepta.demo_quality`),
9. write ``<out>/metrics.json``, ``<out>/report.html`` and ``<out>/gallery.png`` (one picture).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from percepta import config as config_lib
from percepta.errors import PerceptaError

__all__ = ["find_config", "cli_demo", "predict_examples", "DEMO_CONFIG"]

DEMO_CONFIG = "configs/detection/centernet_r18_builtin.yaml"
# The built-in data the demo trains on: 128 px images (objects 16-55 px), 3,600 train / 400 val.
DEMO_DATA = {"num_images": 4000, "image_size": 128, "val_fraction": 0.1, "seed": 0}
QUICK_DATA = {"num_images": 160, "image_size": 128, "val_fraction": 0.2, "seed": 0}
QUICK_OVERRIDES = [
    "train.max_iters=30",
    "train.batch_size=8",
    "train.checkpoint_period=0",
    "train.scheduler.warmup_iters=5",
]


def find_config(rel: str) -> Path:
    """Find a shipped config relative to the cwd or to the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / rel).is_file():
            return base / rel
    raise PerceptaError(f"cannot find {rel} (run from the percepta repository root)")


def _say(step: int, text: str) -> None:
    print(f"\n[demo {step}/9] {text}", flush=True)


def _scalar_metrics(metrics: dict) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = float(v)
        if isinstance(v, (int, float)):
            out[k] = None if isinstance(v, float) and math.isnan(v) else v
    return out


def faster_cpu_precision(cfg: Any, steps: int = 2) -> bool:
    """Whether bf16 autocast trains the demo model faster than fp32 on this CPU.

    It depends on the processor: on the AMD machines the recipe was tuned on, bf16 was faster;
    on an Intel Xeon with AVX512-BF16 but no AMX it was measured 1.8x slower (1.01 vs 0.55 s
    per step of 16 images). A few timed steps on a synthetic batch (~10 s) decide.
    """
    from percepta.components import build_model_from_options, model_options
    from percepta.data.facts import DataFacts
    from percepta.structures import make_target

    opts = model_options(cfg, DataFacts(train={"class_names": [str(i) for i in range(6)]}))
    torch.manual_seed(0)
    model = build_model_from_options(opts).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    size = int(opts.input_size)
    images = [torch.full((3, size, size), 128, dtype=torch.uint8)] * int(cfg.train.batch_size)
    targets = [
        make_target([[8, 8, size // 2, size // 2]], [0], i, (size, size))
        for i in range(len(images))
    ]

    def seconds(amp: bool) -> float:
        times = []
        for _ in range(steps + 1):  # the first step warms up
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = sum(v for k, v in model(images, targets).items() if k.startswith("loss"))
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t)
        return min(times[1:])

    bf16, fp32 = seconds(True), seconds(False)
    choice = "bf16 autocast" if bf16 < fp32 else "fp32"
    print(
        f"  training in {choice} (one step: bf16 {bf16:.2f} s, fp32 {fp32:.2f} s on this CPU)",
        flush=True,
    )
    return bf16 < fp32


def cli_demo(args: argparse.Namespace) -> int:
    from percepta.data.check import check_coco
    from percepta.data.synthetic.detection import generate_detection
    from percepta.engine import launch

    t_start = time.perf_counter()
    out = Path(args.out)
    data_dir = Path(args.data_dir)
    _say(1, f"built-in data -> {data_dir}")
    generate_detection(data_dir, **(QUICK_DATA if args.quick else DEMO_DATA), progress=True)

    _say(2, "checking the dataset")
    for split in ("train", "val"):
        report = check_coco(data_dir / "annotations" / f"instances_{split}.json", open_images=False)
        print(report.format_text(5))
        if not report.ok:
            raise PerceptaError(f"the generated {split} split has errors (see above)")

    _say(3, "training CenterNet-R18 on CPU")
    # the demo is a fresh run each time: it may replace an earlier demo's run folder
    overrides = [
        f"data.root={data_dir}",
        f"output_dir={out.parent}",
        f"name={out.name}",
        "overwrite=true",
    ]
    if args.quick:
        overrides += QUICK_OVERRIDES
    cfg = config_lib.load(find_config(DEMO_CONFIG), overrides)
    if (
        cfg.train.amp
        and not args.quick
        and str(cfg.train.device) in ("auto", "cpu")
        and not torch.cuda.is_available()
    ):
        amp = faster_cpu_precision(cfg)
        if not amp:
            cfg = config_lib.load(find_config(DEMO_CONFIG), [*overrides, "train.amp=false"])
    t0 = time.perf_counter()
    metrics = launch.train(cfg)
    train_time = time.perf_counter() - t0

    _say(4, "evaluation on the validation split (also in the table above)")
    summary = _scalar_metrics(metrics)
    for k in ("AP", "AP50", "AP75", "oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn"):
        if k in summary:
            print(f"  {k:<9} {summary[k]:.4f}" if summary[k] is not None else f"  {k:<9} n/a")

    ckpt = out / "checkpoints" / "last.pt"
    _say(5, "export to ONNX (decode in the graph) and parity check")
    export_info = _export(ckpt, out)

    _say(6, "predictions on held-out images")
    examples = predict_examples(ckpt, data_dir / "val", out / "predictions", n=8)

    _say(7, "scene graphs on the built-in relation data (the detector above, frozen)")
    from percepta.demo_scene_graph import scene_graph_part

    sgg = scene_graph_part(
        ckpt, data_dir.parent / f"{data_dir.name}_relations", out / "scene_graphs", args.quick
    )
    for name, r in sgg["runs"].items():
        m = r["metrics"]
        print(
            f"  {name:<15} R@50 {_f(m['R@50'])}  mR@50 {_f(m['mR@50'])}  zR@50 {_f(m['zR@50'])}"
            f"  ({r['seconds']:.0f} s)"
        )

    _say(8, "image quality: IQT-R18 on the built-in distortion data, held-out references")
    from percepta.demo_quality import quality_part

    quality = quality_part(
        data_dir.parent / f"{data_dir.name}_quality", out / "quality", args.quick
    )
    qm = quality["metrics"]
    print(
        f"  {quality['data']['held_out_images']} held-out images: SROCC {_f(qm['srocc'])}  "
        f"KROCC {_f(qm['krocc'])}  PLCC {_f(qm['plcc'])}  RMSE {_f(qm['rmse'])}"
        f"  ({quality['seconds']:.0f} s)"
    )

    _say(9, "writing metrics.json and report.html")
    result = {
        "metrics": summary,
        "per_class": metrics.get("per_class", []),
        "train_seconds": round(train_time, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "onnx": export_info,
        "scene_graphs": {k: v for k, v in sgg.items() if k != "examples"},
        "quality": {k: v for k, v in quality.items() if k != "examples"},
        "config": config_lib.to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    from percepta.viz.run_report import detection_report

    path = detection_report(out, result, examples, scene_graph=sgg, quality=quality)
    picture = demo_gallery(out / "gallery.png", examples, sgg, quality)
    print(f"\ndone in {result['total_seconds']:.0f} s: {out / 'metrics.json'}, {path}, {picture}")
    return 0


def demo_gallery(
    out: Path, examples: list[tuple[Path, str]], sgg: dict[str, Any], quality: dict[str, Any]
) -> Path:
    """The run in one picture: detections, scene graphs with the recall per predicate, the
    image-quality scatter and attention overlays (what the README shows)."""
    from percepta.viz.gallery import compose_gallery

    panels = [(p, f"detections: {c}") for p, c in examples[:3]]
    panels += [(p, f"scene graph: {c}") for p, c in sgg.get("examples", [])[:2]]
    panels += [(sgg["plot"], "MOTIFS PredCls: recall per predicate")] if sgg.get("plot") else []
    panels += [(quality["plot"], "IQT: predicted vs. true quality")] if quality.get("plot") else []
    panels += [(p, f"IQT attention, {c}") for p, c in quality.get("examples", [])[:1]]
    return compose_gallery(panels, out, columns=4, height=260, title="percepta make demo")


def _f(v: Any) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def _export(ckpt: Path, out: Path) -> dict:
    try:
        from percepta.export.onnx import export_checkpoint
    except ModuleNotFoundError:
        print("  ONNX export is not available in this version; skipped")
        return {"available": False}
    info = export_checkpoint(ckpt, out / "model.onnx", decode="full", check=True)
    print(f"  wrote {info['path']}; parity: {info.get('parity')}")
    return info


def predict_examples(ckpt: Path, image_dir: Path, out: Path, n: int) -> list[tuple[Path, str]]:
    """Predict on the first ``n`` images of ``image_dir`` and save them with boxes drawn
    (small images enlarged); returns ``(png, caption)`` pairs for a report gallery."""
    from percepta.detection.predict import find_images, load_predictor, predict_files
    from percepta.viz.boxes import draw_detections, save_png

    files = find_images([image_dir])[:n]
    predictor, names = load_predictor(str(ckpt), "cpu")
    items = []
    for path, image, pred in predict_files(predictor, files, batch_size=n, progress=False):
        # small images are enlarged (nearest neighbour) so that the labels stay readable
        f = max(1, 384 // max(image.shape[-2:]))
        big = image.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        drawn = draw_detections(big, pred["boxes"] * f, pred["labels"], pred["scores"], names, 0.3)
        p = save_png(drawn, out / f"{path.stem}.png")
        items.append((p, f"{path.name}: {int((pred['scores'] >= 0.3).sum())} boxes >= 0.3"))
    return items
