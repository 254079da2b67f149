"""percepta.data.synthetic: the built-in procedural datasets, written in real formats.

``percepta data synth --task detection`` writes COCO json + PNG (:func:`generate_detection`),
``--task relations`` COCO json + VG-SGG h5 + PNG with controlled annotation bias
(:func:`generate_relations`), ``--task quality`` a KADID-style IQA meta table + PNG
(:func:`generate_quality`), so the built-in data goes through exactly the loaders a user's own
data goes through.
"""

from __future__ import annotations

import argparse

from percepta.data.synthetic.detection import generate_detection
from percepta.data.synthetic.quality import DISTORTIONS, LEVELS, generate_quality
from percepta.data.synthetic.relations import generate_relations, histogram_lines
from percepta.data.synthetic.scene import SynthOptionError, render_image
from percepta.errors import NotAvailableError

__all__ = [
    "cli_synth",
    "generate_detection",
    "generate_quality",
    "generate_relations",
    "render_image",
    "SynthOptionError",
    "DEFAULT_NUM_IMAGES",
]

DEFAULT_NUM_IMAGES = {"detection": 1000, "relations": 800, "quality": 3000}
#: ``--image-size`` when the option is not given (``None``)
DEFAULT_IMAGE_SIZE = {"detection": 256, "relations": 128, "quality": 160}
#: options of ``--task relations`` only (``None`` when not given) and their defaults
RELATION_DEFAULTS = {
    "test_fraction": 0.25,
    "max_relations": 6,
    "generic_prob": 0.3,
    "unannotated": 0.3,
    "zero_shot": 0.07,
}
_PER_REFERENCE = len(DISTORTIONS) * LEVELS


def _print_detection(result: dict) -> None:
    out = result["out"]
    if result["skipped"]:
        print(
            f"{out} already holds this dataset (same options, see {out}/synth_meta.json); "
            "nothing regenerated"
        )
    else:
        o = result["options"]
        print(
            f"wrote the built-in detection dataset (COCO json + PNG, {o['image_size']} px, "
            f"seed {o['seed']}) to {out} in {result['seconds']:.1f} s"
        )
    for split in ("train", "val"):
        s = result[split]
        print(
            f"  {split:<5} {s['images']:>6} images ({s['empty_images']} without objects), "
            f"{s['annotations']:>6} boxes  {s['json']}  +  {s['image_dir']}/"
        )
    per_class = result["instances_per_class"]
    total = max(1, sum(per_class.values()))
    print(
        "  instances per class: "
        + ", ".join(f"{n} {c} ({c / total:.0%})" for n, c in per_class.items())
    )
    print("next:")
    print(f"  percepta data check {out}/annotations/instances_val.json")
    print("  percepta train configs/detection/centernet_r18_builtin.yaml")


def cli_synth(args: argparse.Namespace) -> int:
    """``percepta data synth``: generate a built-in dataset (see ``percepta data synth --help``)."""
    task = args.task
    if task not in DEFAULT_NUM_IMAGES:
        raise NotAvailableError(
            f"data synth --task {task}: the built-in {task} dataset is not available yet in this "
            "version of percepta (available: --task detection, --task relations, --task quality)"
        )
    given = [k for k in RELATION_DEFAULTS if getattr(args, k, None) is not None]
    if task != "relations" and given:
        flag = "--" + given[0].replace("_", "-")
        raise SynthOptionError(f"data synth: {flag} applies to --task relations only")
    num_images = DEFAULT_NUM_IMAGES[task] if args.num_images is None else args.num_images
    image_size = DEFAULT_IMAGE_SIZE[task] if args.image_size is None else args.image_size
    if task == "quality":
        return _cli_quality(args, num_images, image_size)
    if task == "relations":
        return _cli_relations(args, num_images, image_size)
    result = generate_detection(
        args.out,
        num_images=num_images,
        image_size=image_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        workers=args.workers,
        progress=True,
    )
    _print_detection(result)
    return 0


def _cli_quality(args: argparse.Namespace, num_images: int, image_size: int) -> int:
    """``--task quality``: ``--num-images`` distorted images, rounded up to whole references."""
    if not isinstance(num_images, int) or num_images < 1:
        raise SynthOptionError(f"--num-images must be an integer >= 1 (got {num_images!r})")
    refs = -(-num_images // _PER_REFERENCE)
    r = generate_quality(
        args.out, num_references=refs, image_size=image_size, seed=args.seed,
        workers=args.workers, progress=True,
    )  # fmt: skip
    o = r["options"]
    if r["skipped"]:
        print(f"{r['out']} already holds this dataset (same options); nothing regenerated")
    else:
        print(
            f"wrote the built-in full-reference quality dataset ({r['references']} references x "
            f"{_PER_REFERENCE} distorted = {r['images']} images, {o['image_size']} px, seed "
            f"{o['seed']}) to {r['out']} in {r['seconds']:.1f} s"
        )
    print(f"  meta table {r['table']} (scores 1-5, higher is better; split by ref_id)")
    print("next:")
    print(f"  percepta data check {r['table']}")
    return 0


def _cli_relations(args: argparse.Namespace, num_images: int, image_size: int) -> int:
    """``--task relations``: COCO objects + VG-SGG scene graphs + truth (see the generator)."""
    extra = {
        k: (v if (v := getattr(args, k, None)) is not None else d)
        for k, d in RELATION_DEFAULTS.items()
    }
    r = generate_relations(
        args.out, num_images=num_images, image_size=image_size,
        val_fraction=getattr(args, "val_fraction", 0.2), seed=getattr(args, "seed", 0),
        workers=getattr(args, "workers", None), progress=True, **extra,
    )  # fmt: skip
    o, out = r["options"], r["out"]
    if r["skipped"]:
        print(f"{out} already holds this dataset (same options, see {out}/synth_meta.json); "
              "nothing regenerated")  # fmt: skip
    else:
        print(
            f"wrote the built-in relation dataset (COCO json + VG-SGG h5 + PNG, "
            f"{o['image_size']} px, seed {o['seed']}) to {out} in {r['seconds']:.1f} s"
        )
    for split, s in r["splits"].items():
        print(
            f"  {split:<5} {s['images']:>6} images, {s['objects']:>6} objects, "
            f"{s['relations']:>6} relations  annotations/instances_{split}.json"
        )
    zs = r["zero_shot"]
    print(
        f"  num_val_im {r['num_val_im']} (val = the first split-0 images of VG-SGG.h5); "
        f"{len(zs['held_out'])} triplet types held out of train + val, {len(zs['triplets'])} "
        f"zero-shot types in {out}/zero_shot_triplets.json"
    )
    print("  annotated predicates (all images):")
    for line in histogram_lines(r["predicate_counts"]["annotated"]):
        print("  " + line)
    print("next:")
    print(f"  percepta data check {out}/annotations/instances_train.json")
    print(f"  percepta train configs/detection/centernet_r18_builtin.yaml data.root={out}")
    return 0
