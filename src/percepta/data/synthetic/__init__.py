"""percepta.data.synthetic: the built-in procedural datasets, written in real formats.

``percepta data synth --task detection`` writes COCO json + PNG (:func:`generate_detection`), so
the built-in data goes through exactly the loaders a user's own data goes through. The
``relations`` (VG-SGG h5) and ``quality`` (KADID-style csv) generators are not available yet.
"""

from __future__ import annotations

import argparse

from percepta.data.synthetic.detection import generate_detection
from percepta.data.synthetic.quality import DISTORTIONS, LEVELS, generate_quality
from percepta.data.synthetic.scene import SynthOptionError, render_image
from percepta.errors import NotAvailableError

__all__ = [
    "cli_synth",
    "generate_detection",
    "generate_quality",
    "render_image",
    "SynthOptionError",
    "DEFAULT_NUM_IMAGES",
]

DEFAULT_NUM_IMAGES = {"detection": 1000, "quality": 3000}
#: ``--image-size`` when the option is not given (``None``)
DEFAULT_IMAGE_SIZE = {"detection": 256, "quality": 160}
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
            "version of percepta (available: --task detection, --task quality)"
        )
    num_images = DEFAULT_NUM_IMAGES[task] if args.num_images is None else args.num_images
    image_size = DEFAULT_IMAGE_SIZE[task] if args.image_size is None else args.image_size
    if task == "quality":
        return _cli_quality(args, num_images, image_size)
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
