"""The disk tier of the detector-feature cache, on real (tiny, untrained) percepta detectors.

The references are computed here, independently of the cache: the features of the adapter
itself (``adapter.features``), their float16 rounding (``t.half().float()``, what the disk tier
promises to store), the adapter's own ``roi_features`` / ``detect`` on those features, the files
on disk (listed and sized with ``os``), and a relation model trained without any cache.

Tolerances: float16 keeps 11 significant bits (relative rounding error <= 2**-11 ~ 4.9e-4), so
RoI features (bilinear averages of the map) stay within ``1e-3 * max|features|`` of the
originals; ``disk_half=False`` round trips are bit-exact.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from tests.detection.tiny_faster_rcnn import TINY, images, tiny_model
from torchvision.models.detection.image_list import ImageList

from percepta.detection.centernet import CenterNetConfig, build_centernet
from percepta.detection.relation_interface import DetectorFeatures
from percepta.scene_graph.feature_cache import DetectorFeatureCache, detector_fingerprint
from percepta.scene_graph.feature_codec import decode_features, encode_features

C = 3  # object classes of both tiny detectors
BOXES = torch.tensor([[4.0, 6, 30, 40], [40, 10, 60, 60], [0, 0, 64, 48]])


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _centernet(seed: int = 0, input_size: int = 64):
    torch.manual_seed(seed)
    cfg = CenterNetConfig(
        backbone="test_resnet",
        input_size=input_size,
        num_classes=C,
        neck_channels=[32, 16, 8],
        head_conv=8,
        top_k=6,
        score_threshold=0.0,
    )
    return build_centernet(cfg).eval()


def _detector(kind: str, seed: int = 0):
    return tiny_model(TINY, seed=seed) if kind == "faster_rcnn" else _centernet(seed)


class Counting:
    """A RelationDetector that counts ``features`` calls and delegates everything else."""

    def __init__(self, adapter):
        self.inner, self.model = adapter, adapter.model
        self.num_classes, self.out_channels = adapter.num_classes, adapter.out_channels
        self.calls = 0

    def features(self, ims):
        self.calls += len(ims)
        return self.inner.features(ims)

    def roi_features(self, feats, boxes, output_size=7):
        return self.inner.roi_features(feats, boxes, output_size)

    def detect(self, feats):
        return self.inner.detect(feats)


def _files(cache: DetectorFeatureCache) -> dict[str, int]:
    return {e.name: e.stat().st_size for e in os.scandir(cache.folder) if e.name.endswith(".pt")}


def _tensors_of(feats: DetectorFeatures) -> dict[str, torch.Tensor]:
    """Every tensor of a feature structure by a readable path (independent of the encoder)."""
    out = {f"maps.{i}": m for i, m in enumerate(feats.maps)}
    for k, v in feats.extra.items():
        if isinstance(v, ImageList):
            out[f"{k}.tensors"] = v.tensors
        elif isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _match_detections(a: dict, b: dict, box_tol: float, score_tol: float) -> None:
    """Every detection of ``a`` has one in ``b`` with its label, box and score (within the
    tolerances), and the sorted scores agree: detections of an untrained detector have nearly
    tied scores (~1e-5 apart), so float16 features may swap their order, not change them."""
    assert len(a["scores"]) == len(b["scores"])
    sa, sb = a["scores"].sort().values, b["scores"].sort().values
    torch.testing.assert_close(sa, sb, atol=score_tol, rtol=0)
    close_box = (a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1) <= box_tol
    close_score = (a["scores"][:, None] - b["scores"][None]).abs() <= score_tol
    same_label = a["labels"][:, None] == b["labels"][None]
    assert bool((close_box & close_score & same_label).any(1).all())


@pytest.mark.parametrize("kind", ["faster_rcnn", "centernet"])
@pytest.mark.parametrize("half", [True, False])
def test_real_adapter_features_survive_the_disk(tmp_path, kind, half):
    adapter = _detector(kind).relation_interface()
    img = images(0)[0]  # 64 x 64 uint8
    want = adapter.features([img])
    cache = DetectorFeatureCache(0, disk_dir=tmp_path, disk_half=half, detector_fingerprint="d")
    (first,) = cache.features(adapter, [img], [7])
    (got,) = cache.features(adapter, [img], [7])
    assert (cache.misses, cache.disk_hits, cache.disk_writes, len(cache)) == (1, 1, 1, 0)
    assert got is not first and type(got) is DetectorFeatures
    assert got.image_sizes == want.image_sizes == [(64, 64)]
    ref, dec = _tensors_of(want), _tensors_of(got)
    assert set(dec) == set(ref)
    for name, t in ref.items():
        assert dec[name].dtype == t.dtype and dec[name].shape == t.shape, name
        # float16 on disk: exactly the float16 rounding of the large floating tensors
        big_float = half and t.is_floating_point() and t.numel() >= 1024
        assert torch.equal(dec[name], t.half().to(t.dtype) if big_float else t), name
    if kind == "faster_rcnn":
        # maps and extra["features"] were the same tensors: one tensor again after the trip
        assert all(m is f for m, f in zip(got.maps, got.extra["features"].values()))
        assert type(got.extra["features"]) is OrderedDict
        assert type(got.extra["image_list"]) is ImageList
        assert got.extra["image_list"].image_sizes == want.extra["image_list"].image_sizes
        # the padded batch is only a shape (an expanded zero): one element on disk and back
        padded = got.extra["image_list"].tensors
        assert padded.shape == want.extra["image_list"].tensors.shape
        assert padded.untyped_storage().nbytes() <= 8
        (file,) = tmp_path.rglob("*.pt")
        maps_bytes = sum(m.numel() * (2 if half else m.element_size()) for m in want.maps)
        assert file.stat().st_size < maps_bytes + 8 * 1024  # the padded image: 24-48 KiB
    else:
        assert got.extra["scales"].dtype == torch.float64  # small: stored exactly
        assert type(got.extra["heads"]) is dict and set(got.extra["heads"]) >= {"heat", "wh"}
    ra, rb = adapter.roi_features(want, [BOXES]), adapter.roi_features(got, [BOXES])
    if half:
        tol = 1e-3 * float(ra.abs().max())
        torch.testing.assert_close(rb, ra, atol=tol, rtol=1e-3)
        assert not torch.equal(rb, ra)  # really stored as float16
    else:
        assert torch.equal(rb, ra)
    da, db = adapter.detect(want)[0], adapter.detect(got)[0]
    if half:
        _match_detections(da, db, box_tol=0.5, score_tol=1e-4)
    else:
        for k in da:
            assert torch.equal(da[k], db[k]), k


def test_memory_budget_zero_serves_later_epochs_and_runs_from_disk(tmp_path):
    det = Counting(_detector("faster_rcnn").relation_interface())
    ims = images(0) + images(1)
    ids = ["a", "b", 3, 4]
    fp = detector_fingerprint(det)
    cache = DetectorFeatureCache(0, disk_dir=tmp_path, detector_fingerprint=fp)
    cache.features(det, ims, ids)
    assert det.calls == 4 and cache.misses == 4 and cache.disk_writes == 4
    assert cache.folder == tmp_path / fp and len(_files(cache)) == 4
    assert cache.disk_nbytes == sum(_files(cache).values())
    for _ in range(2):  # later epochs: no detector call
        cache.features(det, ims, ids)
    assert det.calls == 4
    assert (cache.hits, cache.disk_hits, cache.misses, cache.disk_errors) == (0, 8, 4, 0)
    # a later run (a new cache on the same folder) reads the files; with room in memory it
    # keeps what it read there, so a third epoch is served from memory
    again = DetectorFeatureCache(64, disk_dir=tmp_path, detector_fingerprint=fp)
    assert again.disk_nbytes == cache.disk_nbytes
    again.features(det, ims, ids)
    again.features(det, ims, ids)
    assert det.calls == 4
    assert (again.disk_hits, again.hits, again.misses, len(again)) == (4, 4, 0, 4)
    # the ids are keyed by value: a tensor id is the int id, another type another image
    again.features(det, [ims[2]], [torch.tensor(3)])
    assert det.calls == 4
    again.features(det, [ims[2]], ["3"])
    assert det.calls == 5


def test_another_detector_never_gets_the_first_ones_files(tmp_path):
    a, b = _detector("faster_rcnn", seed=0), _detector("faster_rcnn", seed=1)
    fa, fb = detector_fingerprint(a), detector_fingerprint(b)
    assert fa != fb
    assert detector_fingerprint(_detector("faster_rcnn", seed=0)) == fa  # stable across builds
    assert detector_fingerprint(a.relation_interface()) != fa  # the adapter class is part of it
    resized = tiny_model(TINY, seed=0, min_size=48)  # same weights, other input size
    assert detector_fingerprint(resized) != fa
    img = images(0)[0]
    da, db = Counting(a.relation_interface()), Counting(b.relation_interface())
    ca = DetectorFeatureCache(0, disk_dir=tmp_path, detector_fingerprint=fa)
    ca.features(da, [img], [1])
    files_a = _files(ca)
    cb = DetectorFeatureCache(0, disk_dir=tmp_path, detector_fingerprint=fb)
    (got,) = cb.features(db, [img], [1])
    assert db.calls == 1 and cb.disk_hits == 0 and cb.misses == 1
    want = b.relation_interface().features([img])
    assert torch.equal(got.maps[0], want.maps[0])  # b's own features
    assert cb.folder != ca.folder and _files(ca) == files_a


def test_truncated_or_garbage_files_are_counted_misses_and_rewritten(tmp_path):
    det = Counting(_centernet().relation_interface())
    img = images(0)[0]
    cache = DetectorFeatureCache(0, disk_dir=tmp_path, detector_fingerprint="x")
    (want,) = cache.features(det, [img], [5])
    ((name, size),) = _files(cache).items()
    path = cache.folder / name
    with open(path, "r+b") as f:  # an interrupted copy: the first half of the file
        f.truncate(size // 2)
    (got,) = cache.features(det, [img], [5])
    assert (det.calls, cache.misses, cache.disk_errors, cache.disk_hits) == (2, 2, 1, 0)
    assert _files(cache) == {name: size}  # rewritten whole
    assert torch.equal(got.maps[0], want.maps[0])
    path.write_bytes(b"not a torch file" * 10)
    cache.features(det, [img], [5])
    assert (det.calls, cache.disk_errors) == (3, 2)
    (again,) = cache.features(det, [img], [5])  # the rewritten file serves
    assert (det.calls, cache.disk_hits, cache.disk_errors) == (3, 1, 2)
    torch.testing.assert_close(again.maps[0], want.maps[0], atol=1e-3, rtol=1e-3)
    # other pixels under the same id (an augmentation): a plain miss, the file rewritten
    flipped = img.flip(-1)
    (f1,) = cache.features(det, [flipped], [5])
    (f2,) = cache.features(det, [flipped], [5])
    assert (det.calls, cache.disk_errors, cache.disk_hits, len(_files(cache))) == (4, 2, 2, 1)
    torch.testing.assert_close(f2.maps[0], f1.maps[0], atol=1e-3, rtol=1e-3)


def test_disk_budget_is_respected(tmp_path):
    det = Counting(_centernet().relation_interface())
    ims = images(0) + images(1)
    probe = DetectorFeatureCache(0, disk_dir=tmp_path / "probe", detector_fingerprint="x")
    probe.features(det, ims[:1], [0])
    one = probe.disk_nbytes
    budget_mb = 2.5 * one / 2**20  # room for two files
    cache = DetectorFeatureCache(
        0, disk_dir=tmp_path / "c", disk_max_mb=budget_mb, detector_fingerprint="x"
    )
    cache.features(det, ims, [0, 1, 2, 3])
    files = _files(cache)
    assert len(files) == 2 and cache.disk_writes == 2 and cache.disk_full == 2
    assert sum(files.values()) <= budget_mb * 2**20
    calls = det.calls
    cache.features(det, ims, [0, 1, 2, 3])  # the two written are read, the others recomputed
    assert cache.disk_hits == 2 and det.calls == calls + 2
    # the budget is of the files' bytes: one file fits exactly, one byte less does not
    for extra, written in ((0, 1), (-1, 0)):
        exact = DetectorFeatureCache(
            0,
            disk_dir=tmp_path / f"e{extra}",
            disk_max_mb=(one + extra) / 2**20,
            detector_fingerprint="x",
        )
        exact.features(det, ims[:1], [0])
        assert (exact.disk_writes, len(_files(exact)), exact.disk_full) == (
            written,
            written,
            1 - written,
        )
    # files of an earlier run count towards the budget
    later = DetectorFeatureCache(
        0, disk_dir=tmp_path / "c", disk_max_mb=budget_mb, detector_fingerprint="x"
    )
    later.features(det, ims[2:], [2, 3])
    assert later.disk_writes == 0 and later.disk_full == 2 and len(_files(later)) == 2


class _NumpyExtra:
    """Features with a value the disk tier cannot encode (a numpy array in ``extra``)."""

    num_classes, out_channels = C, 3

    def __init__(self):
        self.calls = 0

    def features(self, ims):
        import numpy as np

        self.calls += 1
        maps = [torch.stack([im.float() for im in ims])]
        return DetectorFeatures(maps, [tuple(im.shape[1:]) for im in ims], {"a": np.zeros(2)})


def test_unencodable_features_skip_the_disk_and_training_goes_on(tmp_path):
    det = _NumpyExtra()
    ims = images(0)[:1]
    with pytest.warns(UserWarning, match="named by its class only"):
        fp = detector_fingerprint(det)
    cache = DetectorFeatureCache(0, disk_dir=tmp_path, detector_fingerprint=fp)
    for _ in range(2):
        (got,) = cache.features(det, ims, [0])
        assert torch.equal(got.maps[0], ims[0][None].float())
    assert (det.calls, cache.disk_skipped, cache.disk_writes, _files(cache)) == (2, 2, 0, {})


@dataclasses.dataclass
class _Holder:
    x: torch.Tensor
    n: int = 0
    derived: float = dataclasses.field(init=False, default=0.5)


def test_the_encoder_keeps_types_sharing_and_exact_values():
    big = torch.randn(2, 32, 32) * 100
    small = torch.tensor([0.1, 1 / 3], dtype=torch.float64)
    view = torch.arange(100.0)[10:20]
    holder = _Holder(big, 3)
    holder.derived = 2.0
    feats = {
        "t": (big, small, torch.Size([1, 2])),
        "same": [big, holder],
        "ns": SimpleNamespace(v=view, flag=True, name="n", none=None),
        "ints": torch.arange(5000),  # not floating: exact
        "huge": torch.full((2048,), 1e6),  # beyond float16's range: kept float32
        "dt": torch.float64,
        7: "int key",
    }
    enc = encode_features(feats, half=True)
    assert len(enc["tensors"]) == 5  # big once; small, view, ints, huge
    by_dtype = sorted(str(t.dtype) for t in enc["tensors"])
    assert by_dtype == ["torch.float16", "torch.float32", "torch.float32", "torch.float64"] + [
        "torch.int64"
    ]
    assert enc["tensors"][2].untyped_storage().nbytes() == 10 * 4  # the view alone, not all 100
    out = decode_features(enc)
    assert out["t"][0] is out["same"][0] is out["same"][1].x
    assert type(out["t"]) is tuple and type(out["t"][2]) is torch.Size
    assert out["t"][2] == torch.Size([1, 2])
    assert torch.equal(out["t"][0], big.half().float()) and out["t"][0].dtype == torch.float32
    assert torch.equal(out["t"][1], small)
    assert type(out["same"][1]) is _Holder and out["same"][1].n == 3
    assert out["same"][1].derived == 2.0
    ns = out["ns"]
    assert torch.equal(ns.v, view) and (ns.flag, ns.name, ns.none) == (True, "n", None)
    assert torch.equal(out["ints"], torch.arange(5000)) and torch.equal(out["huge"], feats["huge"])
    assert out["dt"] is torch.float64 and out[7] == "int key"
    with pytest.raises(TypeError, match="numpy"):
        import numpy as np

        encode_features({"a": np.zeros(2)})


# -- the relation model with feature_cache_dir -------------------------------------------------


def _scene(g, n=3, size=24):
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    boxes, labels = [], []
    for k in range(n):
        x, y = (int(v) for v in torch.randint(0, size - 6, (2,), generator=g))
        img[k % C, y : y + 6, x : x + 6] = 255
        boxes.append([x, y, x + 5, y + 5])
        labels.append(k % C)
    b = torch.tensor(boxes, dtype=torch.float32)
    rels = [[i, j, 1 if b[i, 0] < b[j, 0] else 2] for i in range(n) for j in range(n) if i != j]
    return img, {"boxes": b, "labels": torch.tensor(labels), "relations": torch.tensor(rels)}


def _relation_model(detector, **kw):
    from percepta.scene_graph.model import RelationModel, RelationOptions

    opts = RelationOptions(
        num_object_classes=C,
        num_predicates=2,
        roi_channels=8,  # the tiny CenterNet's neck
        roi_size=3,
        obj_dim=12,
        pooling_dim=12,
        hidden_dim=6,
        embed_dim=5,
        dropout=0.0,
        batch_size_per_image=16,
        **kw,
    )
    torch.manual_seed(0)
    return RelationModel(opts, detector=detector).train()


@pytest.mark.parametrize("half", [True, False])
def test_relation_training_from_the_disk_tier_gives_the_uncached_losses(
    tmp_path, monkeypatch, half
):
    import percepta.scene_graph.model as rm

    if not half:  # no option for it: the model's cache built with float32 files
        monkeypatch.setattr(
            rm, "DetectorFeatureCache", partial(DetectorFeatureCache, disk_half=False)
        )
    g = torch.Generator().manual_seed(0)
    data = [_scene(g) for _ in range(3)]
    ims = [d[0] for d in data]
    targets = [dict(d[1], image_id=i) for i, d in enumerate(data)]
    det = _centernet()
    counting = Counting(det.relation_interface())
    cached = _relation_model(counting, feature_cache_mb=0, feature_cache_dir=str(tmp_path))
    plain = _relation_model(det, feature_cache_mb=0)
    plain.load_state_dict(cached.state_dict())
    # step 0 computes the features (per image; the plain model in one batch: 1e-5 noise);
    # later steps read them from disk: float16 (~5e-4 relative on the features) moves these
    # ~1.3 losses by ~1e-7 here, bound 1e-4; float32 files give the plain numbers (1e-5)
    for step in range(3):
        torch.manual_seed(step)
        a = cached(ims, targets)
        torch.manual_seed(step)
        b = plain(ims, targets)
        assert set(a) == set(b) == {"loss_rel", "loss_refine_obj"}
        tol = 1e-4 if half and step else 1e-5
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=tol, rtol=0)
        sum(a.values()).backward()
    cache = cached.feature_cache
    assert counting.calls == 3  # the first step only
    assert (cache.misses, cache.disk_hits, cache.hits, cache.disk_writes) == (3, 6, 0, 3)
    assert cache.disk_half is half and cache.folder == tmp_path / detector_fingerprint(counting)


def test_the_config_accepts_the_disk_options():
    from percepta import config
    from percepta.components import model_options
    from percepta.errors import ConfigError
    from percepta.scene_graph import model as _  # noqa: F401  registers "relation"

    cfg = config.load(
        None,
        [
            "model.name=relation",
            "model.feature_cache_dir=/x/cache",
            "model.feature_cache_disk_mb=9",
        ],
    )
    opts = model_options(cfg)
    assert (opts.feature_cache_dir, opts.feature_cache_disk_mb) == ("/x/cache", 9.0)
    with pytest.raises(ConfigError, match="feature_cache_dirr"):
        config.load(None, ["model.name=relation", "model.feature_cache_dirr=/x"])


def test_an_unusable_folder_is_one_config_error(tmp_path):
    from percepta.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="feature cache folder .*file/d: cannot use it") as e:
        DetectorFeatureCache(0, disk_dir=blocker, detector_fingerprint="d")
    assert "\n" not in str(e.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_come_back_on_the_gpu(tmp_path):
    model = _centernet().cuda()
    adapter = model.relation_interface()
    img = images(0)[0].cuda()
    cache = DetectorFeatureCache(0, disk_dir=tmp_path, detector_fingerprint="g")
    (want,) = cache.features(adapter, [img], [0])
    (got,) = cache.features(adapter, [img], [0])
    assert cache.disk_hits == 1 and got.maps[0].is_cuda and got.extra["scales"].is_cuda
    torch.testing.assert_close(got.maps[0], want.maps[0].half().float(), atol=0, rtol=0)
    ra = adapter.roi_features(want, [BOXES])
    rb = adapter.roi_features(got, [BOXES])
    torch.testing.assert_close(rb, ra, atol=1e-3 * float(ra.abs().max()), rtol=1e-3)


def test_memory_accounting_counts_each_buffer_once():
    # what an entry really holds: a view of a map is the map's buffer, an expanded tensor (the
    # Faster R-CNN adapter's padded-shape placeholder) its one element
    from percepta.scene_graph.feature_cache import features_nbytes

    a = torch.zeros(100)  # 400 bytes
    b = torch.zeros(50, dtype=torch.float64)  # 400 bytes
    feats = DetectorFeatures(
        [a],
        [(8, 8)],
        {"view": a[:10], "again": a, "padded": torch.zeros(()).expand(3, 600, 600), "b": [b]},
    )
    assert features_nbytes(feats) == 400 + 400 + 4


def test_expanded_tensors_are_stored_as_their_distinct_elements():
    # an expanded tensor (the Faster R-CNN adapter's padded-shape placeholder) must not be
    # materialised on the way to disk, which a device move or a float16 cast would do
    column = torch.arange(3.0).reshape(3, 1).expand(3, 5000)  # strides (1, 0)
    zero = torch.zeros(()).expand(1, 3, 608, 608)
    enc = encode_features({"c": column, "again": column, "z": zero}, half=True)
    assert sorted(t.numel() for t in enc["tensors"]) == [1, 3]
    out = decode_features(enc)
    assert out["c"].shape == (3, 5000) and out["c"].stride() == (1, 0)
    assert torch.equal(out["c"], column) and torch.equal(out["again"], column)
    assert out["z"].shape == zero.shape and out["z"].untyped_storage().nbytes() == 4
    assert not out["z"].any()
