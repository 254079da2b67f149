"""Helpers shared by the experiment scripts: run configs (resuming unfinished runs, reusing
finished ones), collect their final metrics, and write a comparison report.

Everything goes through percepta's public pieces (config.load, engine.launch.train, the
evaluator, viz), exactly as ``percepta train`` does.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from percepta import config as config_lib
from percepta.data.synthetic.detection import generate_detection
from percepta.demo import DEMO_DATA, find_config
from percepta.engine import launch
from percepta.engine.checkpoint import load_checkpoint
from percepta.engine.trainer import TrainingError
from percepta.jsonable import to_jsonable

DATA = Path("data/builtin")


def builtin_data(root: Path = DATA, options: dict[str, Any] | None = None) -> Path:
    """Built-in detection data (the demo's unless ``options`` say otherwise), generated once and
    reused when already there."""
    generate_detection(root, **(DEMO_DATA if options is None else options), progress=True)
    return root


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run(
    config: str,
    name: str,
    overrides: list[str] = (),
    force: bool = False,
    data_key: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``config`` as run ``name`` (with ``overrides``) unless a finished run of the same
    config exists; an interrupted one is resumed. Returns ``{"metrics", "per_class",
    "train_seconds", "run_dir"}``, also written to ``runs/<name>/final_metrics.json``.

    ``data_key`` describes what the config cannot see (e.g. which classes a script wrote into
    the annotation files it names); a finished run is reused only if it was made with the same
    ``data_key``, so changing the experiment's data retrains instead of reusing stale runs."""
    cfg = config_lib.load(find_config(config), [f"name={name}", *overrides])
    run_dir = Path(cfg.output_dir) / name
    final = run_dir / "final_metrics.json"
    last = run_dir / "checkpoints" / "last.pt"
    wanted = config_lib.to_dict(cfg)
    if not force and final.is_file() and last.is_file():
        done = json.loads(final.read_text())
        if done.get("config") == to_jsonable(wanted) and done.get("data_key") == to_jsonable(
            data_key
        ):
            print(f"[experiment] {name}: finished run found, reusing {final}", flush=True)
            return done
    if not force and last.is_file():
        ckpt = load_checkpoint(last)
        unfinished = int(ckpt.get("iteration", 0)) < int(cfg.train.max_iters)
        same_data = _started_with(run_dir) == to_jsonable(data_key)
        if ckpt.get("config") == wanted and same_data and unfinished:
            print(f"[experiment] {name}: resuming at iteration {ckpt['iteration']}", flush=True)
            cfg = config_lib.load(find_config(config), [f"name={name}", *overrides, "resume=true"])
    if last.is_file() and not cfg.resume:  # a stale or forced run: start it again on purpose
        cfg = config_lib.load(find_config(config), [f"name={name}", *overrides, "overwrite=true"])
    print(f"\n[experiment] training {name} ({config} {' '.join(overrides)})", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "data_key.json").write_text(json.dumps(to_jsonable(data_key)))
    t0 = time.perf_counter()
    error = None
    try:
        metrics = launch.train(cfg)
    except TrainingError as e:  # e.g. a diverged run: recorded, not fatal to the experiment
        print(f"[experiment] {name} stopped: {e}", flush=True)
        metrics, error = {}, str(e)
    seconds = time.perf_counter() - t0
    result = {
        "metrics": {
            k: v for k, v in to_jsonable(metrics).items() if not isinstance(v, (list, dict))
        },
        "per_class": to_jsonable(metrics.get("per_class", [])),
        "train_seconds": round(seconds, 1),
        "run_dir": str(run_dir),
        "config": to_jsonable(wanted),
        "data_key": to_jsonable(data_key),
        "error": error,
    }
    final.write_text(json.dumps(result, indent=2))
    return result


# options that change how a run is shown or scheduled, not what it learns
_PRESENTATION_KEYS = {("overwrite",), ("resume",), ("train", "progress"), ("train", "num_workers")}


def _strip(cfg: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(to_jsonable(cfg)))
    for path in _PRESENTATION_KEYS:
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return out


def _same_run(trained: Any, wanted: Any) -> bool:
    """Configs equal, where an option left unset in ``wanted`` (``[]``, ``0``, ``""``) may hold
    the dataset fact the run filled in (class names, category ids, ...)."""
    if isinstance(trained, dict) and isinstance(wanted, dict):
        return set(trained) == set(wanted) and all(
            _same_run(trained[k], wanted[k]) for k in trained
        )
    return trained == wanted or (wanted in ([], 0, "") and trained not in (None,))


def adopt(config: str, name: str, overrides: list[str] = ()) -> bool:
    """Adopt a finished run of ``config`` trained outside the script (``percepta train ...
    name=<name>``): when its last checkpoint reached ``max_iters`` with the same config (up to
    presentation options: progress bars, data-loader workers, overwrite/resume), write the
    ``final_metrics.json`` that :func:`run` reuses, from the run's own final evaluation."""
    cfg = config_lib.load(find_config(config), [f"name={name}", *overrides])
    run_dir = Path(cfg.output_dir) / name
    final, last = run_dir / "final_metrics.json", run_dir / "checkpoints" / "last.pt"
    if final.is_file() or not last.is_file():
        return False
    ckpt = load_checkpoint(last)
    if int(ckpt.get("iteration", 0)) < int(cfg.train.max_iters):
        return False
    if not _same_run(_strip(ckpt.get("config", {})), _strip(config_lib.to_dict(cfg))):
        return False
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    evals = [x for x in lines if "eval" in x]
    if not evals:
        return False
    metrics = evals[-1]["eval"]
    result = {
        "metrics": {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))},
        "per_class": metrics.get("per_class", []),
        "train_seconds": round(float(evals[-1].get("time", 0.0)), 1),
        "run_dir": str(run_dir),
        "config": to_jsonable(config_lib.to_dict(cfg)),
        "data_key": None,
        "error": None,
    }
    final.write_text(json.dumps(result, indent=2))
    print(f"[experiment] {name}: adopted the finished run in {run_dir}", flush=True)
    return True


def file_digest(path: Path) -> str:
    """SHA-256 of a file (e.g. a teacher checkpoint a later run depends on)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _started_with(run_dir: Path) -> Any:
    """The ``data_key`` a run was started with (None when unrecorded)."""
    try:
        return json.loads((run_dir / "data_key.json").read_text())
    except (OSError, ValueError):
        return None


def class_metric(result: dict[str, Any], class_name: str, key: str = "AP") -> float:
    """A per-class metric of a run's final evaluation (NaN when the class is absent)."""
    for row in result.get("per_class", []):
        if row.get("name") == class_name:
            v = row.get(key)
            return float(v) if v is not None else float("nan")
    return float("nan")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:.3f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_summary(
    out_dir: Path,
    title: str,
    table_header: list[str],
    table_rows: list[list[Any]],
    payload: dict[str, Any],
    curves: list[tuple[str, dict[str, str], bool]] = (),
    notes: list[str] = (),
    gallery: list[tuple[Path, str]] = (),
) -> Path:
    """Write ``summary.json``, ``summary.md`` and ``report.html`` (table + overlaid curves).

    ``curves``: ``(metric key, {label: run_dir}, from_eval)`` per plot.
    """
    from percepta.viz.plots import plot_compare, read_metrics
    from percepta.viz.report import Report

    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown_table(table_header, table_rows)
    (out_dir / "summary.md").write_text(f"# {title}\n\n{md}\n\n" + "\n".join(notes) + "\n")
    (out_dir / "summary.json").write_text(
        json.dumps({"title": title, "machine": machine(), **to_jsonable(payload)}, indent=2)
    )
    rep = Report(title=title, subtitle=f"machine: {machine()}")
    rep.table(table_header, table_rows)
    for n in notes:
        rep.paragraph(n, "note")
    for key, runs, from_eval in curves:
        rows = {label: read_metrics(Path(d) / "metrics.jsonl") for label, d in runs.items()}
        png = plot_compare(
            rows,
            key,
            out_dir / f"{key}{'_eval' if from_eval else ''}.png",
            title=f"{key} per iteration",
            from_eval=from_eval,
            log=not from_eval and "loss" in key,
        )
        if png is not None:
            rep.image(png, key)
    if gallery:
        rep.heading("Example predictions")
        rep.gallery(gallery)
    path = rep.write(out_dir / "report.html")
    print(f"\n{title}\n{md}\n\nwrote {out_dir / 'summary.md'}, {path}", flush=True)
    return path
