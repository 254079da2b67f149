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
from pathlib import Path

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
    "predict": "percepta.predict_dispatch:cli_predict",
    "export": "percepta.predict_dispatch:cli_export",
    "score detection": "percepta.detection.evaluation:cli_score",
    "score scene-graph": "percepta.scene_graph.evaluation:cli_score",
    "score quality": "percepta.quality.evaluation:cli_score",
    "bench": "percepta.cli:cli_bench",
}

# `data convert` formats that are IQA readers (percepta.data.iqa_readers.READERS, listed here so
# that building the parser imports nothing; a test keeps the two in agreement)
IQA_FORMATS = ("kadid10k", "koniq10k", "live", "csiq", "tid2013", "pipal", "clive", "biq2021")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every default, except the uninformative ``None`` and ``False`` (flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """A sub-command parser that shows defaults in ``--help`` and its summary as description."""
    return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config", nargs="?", help="yaml config file (configs/<task>/<model>_<data>.yaml)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.max_iters=200 model.backbone=resnet34",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="percepta",
        description="Visual perception toolkit: detection, scene graphs, image quality.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"percepta {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = _parser(sub, "demo", help="run the main job end to end on the built-in data")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument(
        "--data-dir", default="data/builtin", help="where the built-in data is generated"
    )
    p.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests")
    p.set_defaults(handler="demo")

    p = _parser(sub, "list", help="list registered models, datasets, evaluators and losses")
    p.set_defaults(handler="list")

    # data ---------------------------------------------------------------------------------
    p_data = _parser(sub, "data", help="generate, check and convert datasets")
    dsub = p_data.add_subparsers(dest="data_verb", metavar="ACTION")
    dsub.required = True
    p = _parser(dsub, "synth", help="write a deterministic built-in dataset in a real format")
    p.add_argument(
        "--task",
        choices=["detection", "relations", "quality"],
        default="detection",
        help="which built-in dataset",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="images in total (default: 1000 for detection, 800 for relations, 3000 for quality)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of images in val (relations: share of the train + val images)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="square image side in pixels (default: 256 for detection, 128 for relations, "
        "160 for quality)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g = p.add_argument_group("relations only (--task relations)")
    g.add_argument(
        "--test-fraction", type=float, default=None, help="share of images in test (default 0.25)"
    )
    g.add_argument(
        "--max-relations",
        type=int,
        default=None,
        help="annotated relations per image at most (default 6)",
    )
    g.add_argument(
        "--generic-prob",
        type=float,
        default=None,
        help="base probability that a fine predicate is annotated by a generic one "
        "(near / on / has / with; scaled per predicate and class; default 0.3)",
    )
    g.add_argument(
        "--unannotated",
        type=float,
        default=None,
        help="probability that a true relation is left unannotated (default 0.3)",
    )
    g.add_argument(
        "--zero-shot",
        type=float,
        default=None,
        help="share of the observed (subject, predicate, object) types held out of train + val "
        "(default 0.07)",
    )
    p.set_defaults(handler="data synth")

    p = _parser(dsub, "check", help="validate a dataset: report every defect per file and record")
    p.add_argument(
        "path",
        help="COCO annotation json (or a folder containing annotations/*.json), "
        "or a VG-SGG .h5 (or a folder holding VG-SGG*.h5, with its dicts and image_data json)",
    )
    p.add_argument(
        "--images",
        default=None,
        help="image folder (COCO default: guessed next to the json, e.g. ../val2017; "
        "VG-SGG: only checked when given)",
    )
    p.add_argument("--no-images", action="store_true", help="skip opening image files")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-report", type=int, default=50, help="problems listed per kind")
    p.set_defaults(handler="data check")

    p = _parser(
        dsub,
        "convert",
        help="convert Pascal VOC or Penn-Fudan folders to COCO json, VRD to VG-SGG files, "
        "IQA datasets to a meta-table csv",
    )
    p.add_argument(
        "format",
        choices=["voc", "pennfudan", "vrd", *IQA_FORMATS],
        help="source layout (IQA: kadid10k, koniq10k, live, csiq, tid2013, pipal, clive, biq2021)",
    )
    p.add_argument("src", help="source folder")
    p.add_argument(
        "--out",
        required=True,
        help="output COCO json path (vrd: output folder for VG-SGG files; IQA: meta-table csv)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="VOC ImageSets/Main split name (e.g. train); vrd: test (default) or train",
    )
    p.add_argument(
        "--classes", default=None, help="comma-separated class names (VOC; default: found)"
    )
    p.set_defaults(handler="data convert")

    # train / eval / predict / export ------------------------------------------------------
    p = _parser(sub, "train", help="train a model from a yaml config (+ key=value overrides)")
    _add_config_args(p)
    p.set_defaults(handler="train")

    p = _parser(sub, "eval", help="evaluate a checkpoint on the config's validation split")
    p.add_argument("checkpoint", help="checkpoint .pt written by `percepta train`")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(handler="eval")

    p = _parser(
        sub, "predict", help="run a detector, scene-graph or quality model on images or folders"
    )
    p.add_argument("checkpoint", help="checkpoint .pt or exported .onnx model")
    p.add_argument("images", nargs="*", help="image files and/or folders (quality: or use --pairs)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (detection: COCO-style json + drawn images; quality: scores.csv), "
        "or for quality a .csv file",
    )
    p.add_argument(
        "--coco",
        metavar="ANNOTATIONS.json",
        default=None,
        help="COCO file whose image ids the predictions take (matched by file name; "
        "every image must be in it), so `percepta score detection` can read them; "
        "PredCls / SGCls scene-graph models take each image's objects from it",
    )
    p.add_argument("--score-threshold", type=float, default=0.3, help="drawn boxes' minimum score")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps; "
        ".onnx models: cpu or cuda (onnxruntime providers)",
    )
    p.add_argument("--no-draw", action="store_true", help="only write the json")
    g = p.add_argument_group("quality models only")
    g.add_argument(
        "--reference",
        metavar="REF",
        default=None,
        help="full-reference models: the reference image of every image, or a folder with "
        "each image's reference under the same relative name",
    )
    g.add_argument(
        "--pairs",
        metavar="CSV",
        default=None,
        help="csv with 'image' and 'reference' columns (paths relative to it; a percepta IQA "
        "meta table works), instead of image arguments",
    )
    g.add_argument(
        "--attention",
        metavar="DIR",
        default=None,
        help="also write one PNG per image with the quality token's attention over it",
    )
    p.set_defaults(handler="predict")

    p = _parser(sub, "export", help="export a checkpoint (ONNX with the decode in the graph)")
    p.add_argument(
        "checkpoint", help="detection or quality checkpoint .pt written by `percepta train`"
    )
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    p.add_argument("--out", default=None, help="output path (default: next to the checkpoint)")
    p.add_argument(
        "--decode",
        choices=["full", "peaks"],
        default="full",
        help="full: boxes/scores/labels in the graph; peaks: centerX peak maps only",
    )
    p.add_argument("--top-k", type=int, default=100, help="detections per image in the graph")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (11..20)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    g = p.add_argument_group("quality models only (IQT exports its crop size)")
    g.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        metavar="H [W]",
        default=None,
        help="TRIQ: traced input size (default: the size its position table was made for)",
    )
    g.add_argument(
        "--dynamic",
        action="store_true",
        help="TRIQ: dynamic height and width (sizes in the traced size's pooling regime)",
    )
    p.set_defaults(handler="export")

    # score ---------------------------------------------------------------------------------
    p_score = _parser(sub, "score", help="evaluate result files from any framework")
    ssub = p_score.add_subparsers(dest="score_verb", metavar="TASK")
    ssub.required = True
    p = _parser(ssub, "detection", help="COCO AP family + optimal LRP of a COCO results file")
    p.add_argument("--gt", required=True, help="COCO ground-truth annotation json")
    p.add_argument("--pred", required=True, help="COCO results json (list of detections)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--per-class", action="store_true", help="also print the per-class table")
    p.set_defaults(handler="score detection")

    p = _parser(
        ssub,
        "scene-graph",
        help="R@K, ngR@K, mR@K, zR@K, A@K of a scene-graph file (--protocol vrd: VRD recalls)",
    )
    p.add_argument(
        "file",
        help="results json: percepta's scene-graph schema, or with --protocol vrd a triplet "
        "list (see docs/data.md)",
    )
    p.add_argument(
        "--protocol",
        choices=["sgg", "vrd"],
        default="sgg",
        help="sgg: Scene-Graph-Benchmark metrics; vrd: predicate / phrase / relationship "
        "detection R@50, R@100 (Lu et al., ECCV 2016)",
    )
    p.add_argument(
        "--mode",
        choices=["predcls", "sgcls", "sgdet"],
        default=None,
        help="override the file's mode (sgg)",
    )
    p.add_argument(
        "--box-convention",
        choices=["vg", "vrd", "xyxy"],
        default=None,
        help="box format of the file: vg / vrd (inclusive pixels; the default) or xyxy",
    )
    p.add_argument(
        "--gt", default=None, help="vrd: ground-truth triplet json (else the file's ground_truth)"
    )
    p.add_argument(
        "--zero-shot",
        metavar="Z.json",
        default=None,
        help="vrd: zero-shot [subject, predicate, object] triplets (else the GT's zeroshot flags)",
    )
    p.add_argument(
        "--gt-count",
        choices=["rows", "matlab_length"],
        default=None,
        help="vrd: recall denominator: GT rows (default) or the official code's MATLAB length()",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, help="write the per-predicate R@K bar chart (PNG; sgg)")
    p.set_defaults(handler="score scene-graph")

    p = _parser(ssub, "quality", help="SROCC, KROCC, PLCC, RMSE (+ logistic fits)")
    p.add_argument("--pred", required=True, help="predictions: CSV (image,score) or JSON")
    p.add_argument("--mos", required=True, help="human scores: CSV (image,mos) or JSON")
    p.add_argument(
        "--lower-is-better", action="store_true", help="the MOS is a DMOS (lower = better quality)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--plot", default=None, help="write the scatter plot with the fitted curve (PNG)"
    )
    p.set_defaults(handler="score quality")

    p = _parser(sub, "bench", help="run the benchmark scripts in benchmarks/ (JSON lines)")
    p.add_argument("names", nargs="*", help="benchmark names (default: all)")
    p.set_defaults(handler="bench")
    return parser


def _resolve(spec: str) -> Callable[[argparse.Namespace], int]:
    module_name, func_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise NotAvailableError(
                "this command is not available yet in this version of percepta"
            ) from None
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


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the source checkout percepta runs from (``src/percepta`` -> repo root),
    whatever the current directory."""
    import percepta

    return Path(percepta.__file__).resolve().parents[2] / "benchmarks"


def cli_bench(args: argparse.Namespace) -> int:
    import subprocess

    root = benchmarks_dir()
    scripts = sorted(root.glob("bench_*.py"))
    if not scripts:
        raise NotAvailableError(
            f"no benchmark scripts found in {root}: `percepta bench` runs the benchmarks/ of a "
            "source checkout; install percepta from one (pip install -e .) to use it"
        )
    known = {s.stem.removeprefix("bench_"): s for s in scripts}
    if args.names:
        wanted = [n.removeprefix("bench_").removesuffix(".py") for n in args.names]
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise PerceptaError(
                f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known)}"
            )
        scripts = [known[n] for n in dict.fromkeys(wanted)]
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
        return int(getattr(e, "exit_code", 2))  # an interrupted training: 130 / 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
