"""benchmarks/bench_quality.py in its smallest mode (timm's ``test_resnet``, small images): the
JSON rows' fields, and that its ours-vs-baseline agreement check is real (a planted disagreement
makes it exit non-zero; the batched scores match crops / images scored by a different route)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from percepta.quality.iqt import IQT, IQTConfig, build_iqt
from percepta.quality.triq import TRIQ, TRIQConfig, build_triq

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quality.py"
SIZES = ((64, 96), (80, 80), (96, 64))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_prints_both_rows_with_their_fields(bench, capsys):
    threads = torch.get_num_threads()  # main() sets it: keep this process's setting
    bench.main(["--quick", "--threads", str(threads)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["bench"] for r in rows] == [
        "triq_mixed_resolution_test_resnet",
        "iqt_mcrop_test_resnet",
    ]
    for r, n, atol in zip(rows, (8, 4), (1e-3, 1e-5)):  # 1e-5 of the ranges 0-100 and 0-1
        assert list(r)[:4] == ["bench", "ours", "baseline", "ratio"] and r["unit"] == "s/image"
        assert r["ours"] > 0 and r["baseline"] > 0 and r["images"] == n and r["repeats"] == 1
        assert r["ratio"] == pytest.approx(r["baseline"] / r["ours"], rel=1e-9)
        assert r["images_per_s"]["ours"] * r["ours"] == pytest.approx(1.0, rel=1e-9)
        assert r["images_per_s"]["baseline"] * r["baseline"] == pytest.approx(1.0, rel=1e-9)
        assert r["cpu_s_per_image"]["ours"] > 0 and r["cpu_s_per_image"]["baseline"] > 0
        agree = r["agreement"]
        assert agree["atol"] == pytest.approx(atol, rel=1e-12)
        assert 0 <= agree["max_abs_diff"] <= agree["atol"]
        assert agree["score_spread"] > 10 * agree["atol"]  # the check can tell images apart
        assert r["machine"]["torch_threads"] == threads and "timm" in r["machine"]
    assert rows[0]["sizes"] == [[64, 96], [80, 80], [96, 64], [64, 80]]
    assert (rows[1]["crop_size"], rows[1]["test_crops"]) == (64, 4)


def test_agreement_check_boundary(bench):
    ours = torch.tensor([10.0, 20.0])
    got = bench.check_agreement("x", ours, ours + torch.tensor([0.0, 9e-4]), (0.0, 100.0))
    assert got["max_abs_diff"] == pytest.approx(9e-4, rel=1e-3)
    assert got["atol"] == pytest.approx(1e-3) and got["score_spread"] == pytest.approx(10.0)
    with pytest.raises(SystemExit, match=r"x: .*differ by 0\.0011 > atol 0\.001 at image 1"):
        bench.check_agreement("x", ours, ours + torch.tensor([0.0, 1.1e-3]), (0.0, 100.0))
    with pytest.raises(SystemExit, match="differ"):
        bench.check_agreement("x", torch.tensor([float("nan"), 1.0]), ours, (0.0, 100.0))


def test_a_wrong_triq_batch_path_makes_the_bench_exit(bench, monkeypatch):
    score = TRIQ._score  # shift image i of a batch by 0.01 i: one-image calls are unchanged

    def shifted(self, logits):
        return score(self, logits) + 0.01 * torch.arange(len(logits))

    monkeypatch.setattr(TRIQ, "_score", shifted)
    with pytest.raises(SystemExit, match="triq_mixed_resolution_test_resnet: .* differ") as e:
        bench.bench_triq("test_resnet", SIZES, 3, repeats=1)
    assert e.value.code not in (0, None)


def test_a_wrong_iqt_crop_batch_makes_the_bench_exit(bench, monkeypatch):
    score_crops = IQT.score_crops  # shift crop j of a batch by 1e-3 j: single crops unchanged

    def shifted(self, dist, ref):
        return score_crops(self, dist, ref) + 1e-3 * torch.arange(len(dist))

    monkeypatch.setattr(IQT, "score_crops", shifted)
    with pytest.raises(SystemExit, match="iqt_mcrop_test_resnet: .* differ"):
        bench.bench_iqt("test_resnet", repeats=1, count=2)


def test_triq_batched_scores_match_unpadded_single_images(bench):
    """The padded mixed-size batch vs ``score_batch`` on each image alone (no padding mask,
    no size grouping), on the bench's images."""
    torch.manual_seed(0)
    model = build_triq(TRIQConfig(backbone="test_resnet", score_range=[0.0, 100.0])).eval()
    images = [bench.make_image(*SIZES[i % 3], seed=i) for i in range(5)]
    ours = bench.triq_batched(model, images)
    with torch.no_grad():
        ref = torch.cat([model.score_batch(im[None].float() / 255.0) for im in images])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
    assert float(ref.max() - ref.min()) > 0.05  # distinct images, so a mix-up would show


def test_iqt_scores_match_hand_placed_crops(bench):
    """A 96x80 pair, 64 px crops, M = 4: a 2x2 grid with tops {0, 32} and lefts {0, 16}; with
    the score range 0-1 the score is the plain mean of the four crop scores."""
    torch.manual_seed(0)
    spec = bench.IQT_PRESETS["test_resnet"]
    model = build_iqt(IQTConfig(**spec["model"], score_range=[0.0, 1.0])).eval()
    dist, refs = bench.iqt_pairs((96, 80), 2)
    d, r = dist[1].float() / 255.0, refs[1].float() / 255.0
    corners = [(0, 0), (0, 16), (32, 0), (32, 16)]
    with torch.no_grad():
        units = model.score_crops(
            torch.stack([d[:, t : t + 64, x : x + 64] for t, x in corners]),
            torch.stack([r[:, t : t + 64, x : x + 64] for t, x in corners]),
        )
    expected = float(units.mean())
    ours, loop = bench.iqt_batched(model, dist, refs), bench.iqt_crop_loop(model, dist, refs)
    assert float(ours[1]) == pytest.approx(expected, abs=1e-6)
    assert float(loop[1]) == pytest.approx(expected, abs=1e-6)
    assert float(units.max() - units.min()) > 1e-4  # the crops really differ
