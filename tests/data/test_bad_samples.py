"""Corrupt images: skipped with one warning each, counted across workers, fatal past a fraction.

The datasets are real COCO folders (json + PNG) written in ``tmp_path``; a corrupt image is a
``.png`` holding garbage bytes, which :class:`~percepta.data.coco.CocoDetection` reports as a
DataError naming the file.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from percepta.data.coco import CocoDetection
from percepta.data.loader import ResumableBatchSampler, build_eval_loader, build_train_loader
from percepta.data.transforms import build_transforms
from percepta.errors import DataError

GARBAGE = b"this is not a PNG file at all" * 4


def _write_coco(root: Path, n: int, bad: set[int]) -> Path:
    """``n`` 16x12 images ``00.png``... (image id = index + 1, one box each); the indices in
    ``bad`` hold garbage bytes. Returns the annotation json."""
    img_dir = root / "train2017"
    img_dir.mkdir(parents=True)
    images, anns = [], []
    for k in range(n):
        name = f"{k:02d}.png"
        if k in bad:
            (img_dir / name).write_bytes(GARBAGE)
        else:
            Image.new("RGB", (16, 12), (10 * k % 256, 80, 160)).save(img_dir / name)
        images.append({"id": k + 1, "file_name": name, "width": 16, "height": 12})
        anns.append(
            {
                "id": k + 1,
                "image_id": k + 1,
                "category_id": 1,
                "bbox": [2, 2, 8, 6],
                "area": 48.0,
                "iscrowd": 0,
            }
        )
    ann = root / "annotations" / "instances_train2017.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(
        json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
        )
    )
    return ann


def _dataset(root: Path, n: int, bad: set[int], train: bool = True) -> CocoDetection:
    ann = _write_coco(root, n, bad)
    return CocoDetection(ann, root / "train2017", transforms=build_transforms(train))


def _skip_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "skipping a sample" in str(w.message)]


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_skips_a_corrupt_image_with_one_warning(tmp_path, workers):
    ds = _dataset(tmp_path, 24, bad={5})  # batch 4: 6 batches per epoch, no tail
    loader = build_train_loader(ds, 4, seed=3, num_workers=workers)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        batches = list(itertools.islice(iter(loader), 12))  # two epochs
    msgs = _skip_warnings(record)
    assert len(msgs) == 1 and "05.png" in msgs[0] and "image id 6" in msgs[0]
    ref = ResumableBatchSampler(24, 4, seed=3)
    for k, (images, targets) in enumerate(batches):
        expected = [i + 1 for i in ref.global_batch(k) if i != 5]
        assert [t["image_id"] for t in targets] == expected
        assert len(images) == len(expected)
    assert loader.skipped == 2  # once per epoch
    assert list(loader.bad_samples) == [5]
    assert loader.empty_batches == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_training_stops_with_a_data_error_past_the_skip_fraction(tmp_path, workers):
    bad = {1, 7, 13}
    ds = _dataset(tmp_path, 20, bad=bad)
    # 2 of 20 bad is exactly 10%: allowed; the test sets run for three epochs without error
    ok = build_train_loader(ds, 4, num_workers=workers, max_skip_fraction=0.15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as info:
            list(
                itertools.islice(
                    iter(build_train_loader(ds, 4, num_workers=workers, max_skip_fraction=0.1)), 15
                )
            )
        assert len(list(itertools.islice(iter(ok), 15))) == 15
    msg = str(info.value)
    assert "\n" not in msg and "3 of 20 samples" in msg and "train.max_skip_fraction=0.1" in msg
    assert all(f"{i:02d}.png" in msg for i in bad)
    assert "Traceback" not in msg and "worker" not in msg


def test_exactly_the_fraction_is_still_allowed(tmp_path):
    ds = _dataset(tmp_path, 20, bad={2, 9})
    loader = build_train_loader(ds, 4, max_skip_fraction=0.1)  # 2 of 20 = 0.1, not past it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(list(itertools.islice(iter(loader), 10))) == 10  # two epochs
    assert sorted(loader.bad_samples) == [2, 9] and loader.skipped == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_a_batch_of_only_bad_samples_is_replaced_by_the_next_batch(tmp_path, workers):
    ds = _dataset(tmp_path, 4, bad={0, 1})
    loader = build_train_loader(ds, 2, shuffle=False, num_workers=workers, max_skip_fraction=0.5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = [[t["image_id"] for t in targets] for _, targets in itertools.islice(iter(loader), 3)]
    assert got == [[3, 4], [3, 4], [3, 4]]  # batches [0,1] (ids 1, 2) are all bad
    assert loader.empty_batches == 3 and loader.skipped == 6
    assert len(_skip_warnings(record)) == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_loader_skips_a_corrupt_image_and_visits_the_rest_once(cocodata, tmp_path, workers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny set's clipped-box summary
        ann = cocodata.write(tmp_path)
        (tmp_path / "val2017" / "b.png").write_bytes(GARBAGE)  # image id 20
        ds = CocoDetection(ann)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ids = [
            t["image_id"]
            for _, targets in build_eval_loader(ds, 2, num_workers=workers)
            for t in targets
        ]
    assert ids == [10, 30]
    msgs = _skip_warnings(record)
    assert len(msgs) == 1 and "b.png" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shard_ids = [
            [
                t["image_id"]
                for _, targets in build_eval_loader(ds, 1, rank=r, world_size=2)
                for t in targets
            ]
            for r in range(2)
        ]
    assert shard_ids == [[10, 30], []]  # rank 1's only image is the bad one


def test_skip_fraction_outside_0_1_is_refused(tmp_path):
    ds = _dataset(tmp_path, 4, bad=set())
    with pytest.raises(DataError, match="max_skip_fraction=1.5"):
        build_train_loader(ds, 2, max_skip_fraction=1.5)
