"""The scene-graph part of ``percepta demo``: relations on the demo's own detector.

The built-in relation data draws the same six shape classes as the detection data, so the
CenterNet the demo just trained serves as the frozen detector (``model.detector_checkpoint``).
On the relation data (``percepta data synth --task relations``, 800 images) the demo trains
the FREQ baseline and MOTIFS in PredCls and MOTIFS in SGDet
(``configs/scene_graph/*_builtin.yaml`` with the demo's sizes), evaluates them on the test split
(R@K, mR@K, zR@K), plots MOTIFS's per-predicate recall and draws example graphs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from percepta import config as config_lib
from percepta.jsonable import finite_or_none, to_jsonable

__all__ = ["scene_graph_part", "SGG_DATA", "SGG_RUNS"]

SGG_DATA = {"num_images": 800, "image_size": 128, "seed": 0}
QUICK_SGG_DATA = {"num_images": 40, "image_size": 128, "seed": 0}
# (run, config, overrides): the demo's three relation runs
SGG_RUNS = [
    ("freq_predcls", "configs/scene_graph/freq_predcls_builtin.yaml", ["train.max_iters=100"]),
    ("motifs_predcls", "configs/scene_graph/motifs_predcls_builtin.yaml", ["train.max_iters=400"]),
    ("motifs_sgdet", "configs/scene_graph/motifs_sgdet_builtin.yaml", ["train.max_iters=300"]),
]
QUICK_OVERRIDES = ["train.max_iters=3", "train.batch_size=4"]
KEYS = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "zR@50", "zR@100")


def scene_graph_part(
    detector_ckpt: Path, data_dir: Path, out: Path, quick: bool = False
) -> dict[str, Any]:
    """Run the scene-graph part; returns ``{"runs": {name: {mode, metrics, seconds}},
    "plot": png, "examples": [(png, caption)], "seconds"}``."""
    from percepta.data.synthetic.relations import generate_relations
    from percepta.demo import find_config
    from percepta.engine import launch

    t0 = time.perf_counter()
    info = generate_relations(data_dir, **(QUICK_SGG_DATA if quick else SGG_DATA), progress=True)
    num_val_im = int(info.get("num_val_im", 0))
    runs: dict[str, Any] = {}
    for name, rel, overrides in SGG_RUNS:
        extra = [
            f"data.root={data_dir}",
            f"data.train.num_val_im={num_val_im}",
            f"model.detector_checkpoint={detector_ckpt}",
            f"output_dir={out}",
            f"name={name}",
            "overwrite=true",
            *overrides,
            *(QUICK_OVERRIDES if quick else []),
        ]
        cfg = config_lib.load(find_config(rel), extra)
        t = time.perf_counter()
        metrics = launch.train(cfg)
        runs[name] = {
            "mode": str(cfg.model.mode),
            "predictor": str(cfg.model.predictor),
            "metrics": {k: finite_or_none(metrics.get(k)) for k in KEYS},
            "per_predicate": metrics.get("per_predicate", {}),
            "seconds": round(time.perf_counter() - t, 1),
            "checkpoint": str(out / name / "checkpoints" / "last.pt"),
        }
    plot = _per_predicate_plot(runs["motifs_predcls"], out / "plots")
    examples = _examples(runs["motifs_predcls"]["checkpoint"], data_dir, out / "graphs", n=4)
    result = {"runs": runs, "plot": plot, "examples": examples}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "scene_graph_metrics.json").write_text(json.dumps(to_jsonable(result), indent=2))
    return result


def _per_predicate_plot(run: dict[str, Any], folder: Path) -> str | None:
    from percepta.viz.bars import per_predicate_bars

    ckpt = Path(run["checkpoint"])
    per = run.get("per_predicate") or {}
    recalls = (per.get("mR") or {}).get(50) or (per.get("mR") or {}).get("50")
    if recalls is None:
        return None
    import percepta

    names = list(percepta.load(str(ckpt)).options.predicate_names)
    path = folder / "per_predicate_recall.png"
    per_predicate_bars(
        recalls,
        names,
        out_path=path,
        title=f"MOTIFS PredCls: per-predicate R@50 (mR@50 = {run['metrics']['mR@50']:.3f})",
        ylabel="R@50",
    )
    return str(path)


def _examples(ckpt: str, data_dir: Path, folder: Path, n: int) -> list[tuple[str, str]]:
    """Scene-graph pictures of the first ``n`` test images (PredCls: the GT objects)."""
    import percepta
    from percepta.data.images import read_rgb
    from percepta.inference import run_model
    from percepta.scene_graph.predict import coco_objects, graph_record
    from percepta.viz.scene_graph import draw_scene_graph

    ann = json.loads((data_dir / "annotations" / "instances_test.json").read_text())
    model = percepta.load(ckpt)
    opts = model.options
    items = []
    for im in ann["images"][:n]:
        image = read_rgb(data_dir / "images" / im["file_name"])
        pred = run_model(model, [image], [coco_objects(ann, im["id"])])[0]
        rec = graph_record(pred, list(opts.object_names), list(opts.predicate_names), top_k=8)
        top = [
            (r["subject"], r["object"], r["predicate_name"], r["score"]) for r in rec["relations"]
        ]
        path = draw_scene_graph(
            image,
            pred["boxes"],
            pred["labels"].tolist(),
            list(opts.object_names),
            top,
            folder / f"{Path(im['file_name']).stem}.png",
        )
        items.append((str(path), f"{im['file_name']}: top {len(top)} relations (PredCls)"))
    return items
