"""``percepta <verb>``: the command line.

Every verb is declared here (so ``--help`` works everywhere, even for capabilities that are not
built yet) and dispatched lazily to a ``cli_*`` function in the module that owns the work, so
starting the CLI stays fast and a task never imports the CLI.

Errors meant for the user (:class:`percepta.errors.PerceptaError` and its subclasses) are printed
as one ``error: ...`` line with exit status 2; set ``PERCEPTA_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from percepta import __version__
from percepta.errors import NotAvailableError, PerceptaError

# verb path -> "module:function". Each function takes the parsed argparse.Namespace and returns
# an exit status (0 = success).
HANDLERS: dict[str, str] = {
    "demo": "percepta.demo:cli_demo",
    "list": "percepta.cli:cli_list",
    "data synth": "percepta.data.synthetic:cli_synth",
    "data check": "percepta.data.check:cli_check",
    "data convert": "percepta.data.convert:cli_convert",
    "train": "percepta.engine.launch:cli_train",
    "eval": "percepta.engine.launch:cli_eval",
    "predict": "percepta.detection.predict:cli_predict",
    "export": "percepta.export.onnx:cli_export",
    "score detection": "percepta.detection.evaluation:cli_score",
    "score scene-graph": "percepta.scene_graph.evaluation:cli_score",
    "score quality": "percepta.quality.evaluation:cli_score",
    "bench": "percepta.cli:cli_bench",
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="yaml config file (configs/<task>/<model>_<data>.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.max_iters=200 model.backbone=resnet34")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="percepta",
        description="Visual perception toolkit: detection, scene graphs, image quality.",
    )
    parser.add_argument("--version", action="version", version=f"percepta {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = sub.add_parser("demo", help="run the main job end to end on the built-in data")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--data-dir", default="data/builtin",
                   help="where the built-in data is generated (default: data/builtin)")
    p.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests")
    p.set_defaults(handler="demo")

    p = sub.add_parser("list", help="list registered models, datasets, evaluators and losses")
    p.set_defaults(handler="list")

    # data ---------------------------------------------------------------------------------
    p_data = sub.add_parser("data", help="generate, check and convert datasets")
    dsub = p_data.add_subparsers(dest="data_verb", metavar="ACTION")
    dsub.required = True
    p = dsub.add_parser("synth", help="write a deterministic built-in dataset in a real format")
    p.add_argument("--task", choices=["detection", "relations", "quality"], default="detection")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-images", type=int, default=None,
                   help="images in total (default depends on the task)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val")
    p.add_argument("--image-size", type=int, default=256, help="square image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(handler="data synth")

    p = dsub.add_parser("check", help="validate a dataset: report every defect per file and record")
    p.add_argument("path", help="COCO annotation json (or a folder containing annotations/*.json)")
    p.add_argument("--images", default=None,
                   help="image folder (default: guessed next to the json, e.g. ../val2017)")
    p.add_argument("--no-images", action="store_true", help="skip opening image files")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-report", type=int, default=50, help="problems listed per kind")
    p.set_defaults(handler="data check")

    p = dsub.add_parser("convert", help="convert Pascal VOC or Penn-Fudan folders to COCO json")
    p.add_argument("format", choices=["voc", "pennfudan"], help="source layout")
    p.add_argument("src", help="source folder")
    p.add_argument("--out", required=True, help="output COCO json path")
    p.add_argument("--split", default=None, help="VOC ImageSets/Main split name (e.g. train)")
    p.add_argument("--classes", default=None, help="comma-separated class names (VOC; default: found)")
    p.set_defaults(handler="data convert")

    # train / eval / predict / export ------------------------------------------------------
    p = sub.add_parser("train", help="train a model from a yaml config (+ key=value overrides)")
    _add_config_args(p)
    p.set_defaults(handler="train")

    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's validation split")
    p.add_argument("checkpoint", help="checkpoint .pt written by `percepta train`")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(handler="eval")

    p = sub.add_parser("predict", help="run a detector on images or folders")
    p.add_argument("checkpoint", help="checkpoint .pt or exported .onnx model")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--out", required=True, help="output folder (COCO-style json + drawn images)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="drawn boxes' minimum score")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-draw", action="store_true", help="only write the json")
    p.set_defaults(handler="predict")

    p = sub.add_parser("export", help="export a checkpoint (ONNX with the decode in the graph)")
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", default=None, help="output path (default: next to the checkpoint)")
    p.add_argument("--decode", choices=["full", "peaks"], default="full",
                   help="full: boxes/scores/labels in the graph; peaks: centerX peak maps only")
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.set_defaults(handler="export")

    # score ---------------------------------------------------------------------------------
    p_score = sub.add_parser("score", help="evaluate result files from any framework")
    ssub = p_score.add_subparsers(dest="score_verb", metavar="TASK")
    ssub.required = True
    p = ssub.add_parser("detection", help="COCO AP family + optimal LRP of a COCO results file")
    p.add_argument("--gt", required=True, help="COCO ground-truth annotation json")
    p.add_argument("--pred", required=True, help="COCO results json (list of detections)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--per-class", action="store_true", help="also print the per-class table")
    p.set_defaults(handler="score detection")

    p = ssub.add_parser("scene-graph", help="R@K, ngR@K, mR@K, zR@K, A@K of a scene-graph file")
    p.add_argument("file", help="results json in percepta's scene-graph schema (see README)")
    p.add_argument("--mode", choices=["predcls", "sgcls", "sgdet"], default=None,
                   help="override the file's mode")
    p.add_argument("--box-convention", choices=["vg", "xyxy"], default="vg")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, help="write the per-predicate R@K bar chart (PNG)")
    p.set_defaults(handler="score scene-graph")

    p = ssub.add_parser("quality", help="SROCC, KROCC, PLCC, RMSE (+ logistic fits)")
    p.add_argument("--pred", required=True, help="predictions: CSV (image,score) or JSON")
    p.add_argument("--mos", required=True, help="human scores: CSV (image,mos) or JSON")
    p.add_argument("--lower-is-better", action="store_true",
                   help="the MOS is a DMOS (lower = better quality)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, help="write the scatter plot with the fitted curve (PNG)")
    p.set_defaults(handler="score quality")

    p = sub.add_parser("bench", help="run the benchmark scripts in benchmarks/ (JSON lines)")
    p.add_argument("names", nargs="*", help="benchmark names (default: all)")
    p.set_defaults(handler="bench")
    return parser


def _resolve(spec: str) -> Callable[[argparse.Namespace], int]:
    module_name, func_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise NotAvailableError("this command is not available yet in this version of percepta") from None
        raise
    return getattr(module, func_name)


def cli_list(args: argparse.Namespace) -> int:
    from percepta.registry import ALL_REGISTRIES, import_all

    import_all()
    for kind, reg in ALL_REGISTRIES.items():
        print(f"{kind}:")
        if not len(reg):
            print("  (none yet)")
        for entry in reg:
            print(f"  {entry.name:<24} {entry.help}")
    return 0


def cli_bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    root = Path.cwd() / "benchmarks"
    scripts = sorted(root.glob("bench_*.py"))
    if args.names:
        wanted = {n.removeprefix("bench_").removesuffix(".py") for n in args.names}
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    if not scripts:
        raise NotAvailableError(f"no benchmark scripts found in {root} (run from the repository root)")
    status = 0
    for s in scripts:
        status |= subprocess.call([sys.executable, str(s)])
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_resolve(HANDLERS[args.handler])(args) or 0)
    except PerceptaError as e:
        if os.environ.get("PERCEPTA_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
