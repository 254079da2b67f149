"""Built-in full-reference quality data: deterministic for any worker count, scores monotone in
the level per distortion, the documented formula, SSIM against torchmetrics, the CLI."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.cli import main
from percepta.data import iqa_table as iq
from percepta.data.synthetic import quality as q


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("qa"), tmp_path_factory.mktemp("qb")
    q.generate_quality(a, num_references=3, image_size=64, seed=5, workers=1)
    q.generate_quality(b, num_references=3, image_size=64, seed=5, workers=2)
    return a, b


def test_deterministic_for_any_number_of_workers(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 3 + 3 * 10 * 5
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / q.TABLE_NAME).read_text() == (b / q.TABLE_NAME).read_text()


def test_table_is_valid_and_scores_fall_with_level(two_runs: tuple[Path, Path]) -> None:
    path = two_runs[0] / q.TABLE_NAME
    assert iq.check_table(path) == []
    t = iq.read_table(path)
    assert t.full_reference and t.score_range == (1.0, 5.0) and len(t) == 150
    by = defaultdict(dict)
    for r in t.records:
        by[(r.ref_id, r.distortion)][r.level] = r.score
    assert len(by) == 3 * 10 and {d for _, d in by} == set(q.DISTORTIONS)
    for key, levels in by.items():
        scores = [levels[k] for k in range(1, 6)]
        assert all(x > y for x, y in zip(scores, scores[1:])), (key, scores)


def test_score_formula_by_hand(two_runs: tuple[Path, Path]) -> None:
    t = iq.read_table(two_runs[0] / q.TABLE_NAME)
    r = next(r for r in t.records if r.distortion == "jpeg" and r.level == 3)
    s = float(r.extra["ssim"])
    expected = 1 + 4 * (0.5 * min(max(s, 0), 1) + 0.5 * (1 - 0.85 * 3 / 5))
    assert r.score == pytest.approx(expected, abs=1e-4)  # csv rounds to 4 decimals
    assert q.quality_score(0.9, "saturation", 5) == pytest.approx(1 + 4 * (0.45 + 0.5 * 0.5))
    assert q.quality_score(-0.3, "white_noise", 1) == pytest.approx(1 + 4 * 0.5 * (1 - 0.16))


def test_ssim_matches_torchmetrics_on_luma() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int64) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    luma = lambda x: torch.from_numpy(x.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))  # noqa: E731
    ref = tm_ssim(luma(b)[None, None], luma(a)[None, None], data_range=255.0, kernel_size=11)
    assert q.ssim(a, b) == pytest.approx(float(ref), abs=1e-9)
    assert q.ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_distortions_change_the_image_and_keep_its_shape() -> None:
    ref = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for name in q.DISTORTIONS:
        out = q.distort(ref, name, 5, np.random.default_rng(0))
        assert out.shape == ref.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - ref).mean() > 1.0, name
    with pytest.raises(q.SynthOptionError):
        q.distort(ref, "jpeg", 6, np.random.default_rng(0))


def test_cli_quality_and_rerun_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "q"
    argv = ["data", "synth", "--task", "quality", "--out", str(out), "--num-images", "50"]
    argv += ["--image-size", "64", "--workers", "1"]
    assert main(argv) == 0
    assert "1 references x 50 distorted = 50 images, 64 px" in capsys.readouterr().out
    assert len(iq.read_table(out / q.TABLE_NAME)) == 50
    assert main(argv) == 0
    assert "nothing regenerated" in capsys.readouterr().out
    assert main(["data", "check", str(out / q.TABLE_NAME)]) == 0


def test_refuses_a_folder_of_another_dataset(tmp_path: Path) -> None:
    from percepta.errors import DataError

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "mine.png").write_bytes(b"x")
    with pytest.raises(DataError, match="did not generate"):
        q.generate_quality(tmp_path, num_references=1, image_size=64, workers=1)
