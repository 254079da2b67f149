"""Relation head on a frozen detector: PredCls training throughput and SGDet inference per image.

1. ``relation_predcls_train_<detector>``: seconds per training image (forward + backward +
   AdamW step, built as ``percepta train`` builds it) of MOTIFS PredCls on each frozen detector
   of the scene-graph experiments (CenterNet-R18 dilated, the demo's CenterNet-R18 layer3,
   Faster R-CNN-R18-FPN), ours =
   the detector-feature cache
   (``model.feature_cache_mb``, the detector runs once per image, then its features are reused),
   baseline = the naive loop that reruns the frozen detector on every batch, as
   Scene-Graph-Benchmark does (its batched call, under ``no_grad``). Both train the same model
   on the same batches; timed over the epochs after the first (the cache's steady state), and
   the first epoch is reported too. At the seed's scale a ``..._disk`` line adds the cache's
   disk tier alone (``model.feature_cache_mb=0``, ``model.feature_cache_dir`` a temporary
   folder, float16 files: every image read back from disk each epoch) against the same naive
   loop, the regime of a training set larger than the memory budget.
2. ``relation_sgdet_inference``: SGDet seconds per image with the breakdown detector / relation
   head / post-processing (the CPU preset's 20 best detections, so up to 380 pairs per image);
   ours = batches of 8, baseline = one image at a time.

The data is the built-in relation data (``percepta data synth --task relations``, 64 images
written to a temporary folder); the detector is randomly initialised (its speed does not
depend on its weights). Usage: ``python benchmarks/bench_relation.py [--quick] [--threads 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/, from any cwd
import torch  # noqa: E402

from _common import emit, machine  # noqa: E402

# Scene-Graph-Benchmark's training scale: MIN_SIZE_TRAIN 600, padded to a multiple of 32
SEED_SIZE = 608
BIG_KINDS = ("centernet_layer3", "faster_rcnn")


def _detector(kind: str, num_classes: int, size: int = 128) -> torch.nn.Module:
    """The frozen detectors of the scene-graph experiments (configs/scene_graph/...):
    ``centernet`` = CenterNet-R18 with the dilated layer4 (centernet_r18_relations.yaml),
    ``centernet_layer3`` = the demo's lighter one, ``faster_rcnn`` = the R18-FPN preset."""
    if kind == "faster_rcnn":
        from percepta.detection.faster_rcnn import FasterRCNNConfig, build_faster_rcnn

        return build_faster_rcnn(
            FasterRCNNConfig(
                backbone="resnet18",
                min_size=size,
                max_size=size,
                fpn_channels=32,
                representation_size=256,
                anchor_sizes=[16, 32, 64, 128, 256],
                num_classes=num_classes,
            )
        ).eval()
    from percepta.detection.centernet import CenterNetConfig, build_centernet

    layer3 = kind == "centernet_layer3"
    cfg = CenterNetConfig(
        backbone="resnet18",
        output_stride=32 if layer3 else 16,
        backbone_out_index=3 if layer3 else -1,
        neck_channels=[128, 64],
        input_size=size,
        num_classes=num_classes,
        channels_last=True,
    )
    return build_centernet(cfg).eval()


def _model(
    det: torch.nn.Module, ds, mode: str, cache_mb: float, cache_dir: str = ""
) -> torch.nn.Module:
    from percepta.detection.relation_interface import relation_detector
    from percepta.scene_graph.model import RelationModel, RelationOptions

    opts = RelationOptions(
        mode=mode,
        num_object_classes=len(ds.object_names),
        num_predicates=len(ds.predicate_names),
        object_names=ds.object_names,
        predicate_names=ds.predicate_names,
        roi_channels=int(relation_detector(det).out_channels),
        obj_dim=256,
        pooling_dim=256,
        hidden_dim=128,
        embed_dim=64,
        batch_size_per_image=64,
        max_detections=20,  # the CPU preset's (configs/scene_graph/motifs_predcls_builtin.yaml)
        feature_cache_mb=cache_mb,
        feature_cache_dir=cache_dir,
    )
    torch.manual_seed(0)
    return RelationModel(opts, detector=det)


def _batches(ds, batch: int):
    items = [ds[i] for i in range(len(ds))]
    return [
        ([im for im, _ in items[i : i + batch]], [t for _, t in items[i : i + batch]])
        for i in range(0, len(items), batch)
    ]


def _train_epochs(model, batches, epochs: int) -> list[float]:
    from percepta.engine.optim import build_optimizer

    model.train()
    opt = build_optimizer(model, {"name": "adamw", "lr": 1e-3})  # as percepta train builds it
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for images, targets in batches:
            losses = model(images, targets)
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()
        times.append(time.perf_counter() - t)
    return times


def bench_training(
    ds, det, kind: str, epochs: int, batch: int, size: int = 128, disk: bool = False
) -> None:
    batches = _batches(ds, batch)
    n = len(ds)
    naive = _train_epochs(_model(det, ds, "predcls", 0), batches, epochs)
    base = sum(naive[1:]) / (n * (epochs - 1))
    name = f"relation_predcls_train_{kind}" + ("" if size == 128 else f"_{size}px")
    variants = [("", 1024.0, False)] + ([("_disk", 0.0, True)] if disk else [])
    for suffix, cache_mb, on_disk in variants:
        with tempfile.TemporaryDirectory() as tmp:
            model = _model(det, ds, "predcls", cache_mb, tmp if on_disk else "")
            cached = _train_epochs(model, batches, epochs)
            extra = {}
            if on_disk:  # the disk tier's counters and size (float16 files)
                cache = model.feature_cache
                extra = {"disk": {k: cache.stats()[k] for k in ("disk_hits", "disk_nbytes")}}
        emit(
            name + suffix,
            sum(cached[1:]) / (n * (epochs - 1)),
            base,
            unit="s/image",
            image_size=size,
            first_epoch={"ours": cached[0] / n, "baseline": naive[0] / n},
            images=n,
            batch=batch,
            epochs=epochs,
            **extra,
            machine=machine("torch", "torchvision"),
        )


def _sgdet_breakdown(model, images) -> dict[str, float]:
    """Seconds for one ``images`` batch: detector (features + detections), relation head,
    post-processing (the model's own steps, timed separately)."""
    import percepta.scene_graph.model as rm

    parts = {"detector": 0.0, "head": 0.0, "post": 0.0}
    det, post = model.detector, model.postprocessor

    class _Timed:
        def __init__(self, fn, key):
            self.fn, self.key = fn, key

        def __call__(self, *a, **k):
            t = time.perf_counter()
            out = self.fn(*a, **k)
            parts[self.key] += time.perf_counter() - t
            return out

    orig_run, orig_detect = model._run_detector, model._detect
    model._run_detector = _Timed(orig_run, "detector")
    model._detect = _Timed(orig_detect, "detector")
    model.postprocessor = _Timed(post, "post")
    t = time.perf_counter()
    with torch.no_grad():
        model(images)
    total = time.perf_counter() - t
    model._run_detector, model._detect, model.postprocessor = orig_run, orig_detect, post
    parts["head"] = total - parts["detector"] - parts["post"]
    parts["total"] = total
    del det, rm
    return parts


def bench_sgdet(ds, det, n_images: int) -> None:
    model = _model(det, ds, "sgdet", 0).eval()
    images = [ds[i][0] for i in range(n_images)]
    _sgdet_breakdown(model, images[:2])  # warm-up
    one = {"detector": 0.0, "head": 0.0, "post": 0.0, "total": 0.0}
    for im in images:
        for k, v in _sgdet_breakdown(model, [im]).items():
            one[k] += v / n_images
    eight = {"detector": 0.0, "head": 0.0, "post": 0.0, "total": 0.0}
    for i in range(0, n_images, 8):
        for k, v in _sgdet_breakdown(model, images[i : i + 8]).items():
            eight[k] += v / n_images
    emit(
        "relation_sgdet_inference",
        eight["total"],
        one["total"],
        unit="s/image",
        breakdown_batch8={k: round(v, 5) for k, v in eight.items()},
        breakdown_batch1={k: round(v, 5) for k, v in one.items()},
        images=n_images,
        machine=machine("torch", "torchvision"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke-test size")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = 16 if args.quick else 64
    epochs = 2 if args.quick else 4
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PERCEPTA_CACHE_DIR", tmp)
        ds = _dataset(f"{tmp}/d128", n, 128)
        c = len(ds.object_names)
        for kind in ("centernet", "centernet_layer3", "faster_rcnn"):
            bench_training(ds, _detector(kind, c), kind, epochs=epochs, batch=8)
        bench_sgdet(ds, _detector("centernet", c), n_images=8 if args.quick else 32)
        # the seed's scale (the quick mode runs the same path at a small size)
        size, kinds = (192, ("centernet_layer3",)) if args.quick else (SEED_SIZE, BIG_KINDS)
        big = _dataset(f"{tmp}/d{size}", 8 if args.quick else 32, size)
        for kind in kinds:
            det = _detector(kind, c, size)
            bench_training(big, det, kind, epochs=epochs, batch=8, size=size, disk=True)


def _dataset(folder: str, n: int, size: int):
    """``n`` training images of the built-in relation data at ``size`` px."""
    from percepta.data.synthetic.relations import generate_relations
    from percepta.data.vg_sgg_dataset import VGSGGDataset, VGSGGDatasetConfig

    info = generate_relations(folder, num_images=int(n / 0.6) + 1, image_size=size, workers=1)
    return VGSGGDataset(
        VGSGGDatasetConfig(split="train", num_val_im=info["num_val_im"]), root=folder
    )


if __name__ == "__main__":
    main()
