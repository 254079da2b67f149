"""IQA meta tables: readers on tiny files in each dataset's layout, real clive / biq2021 files,
content-disjoint k-fold splits, direction flips (checked by hand), dataset items, check defects."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import shared_data_path

from percepta.cli import main
from percepta.data import iqa_readers as rd
from percepta.data import iqa_table as iq
from percepta.errors import DataError
from percepta.registry import DATASETS, import_all


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (24, 20)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path)
    return arr


# ------------------------------------------------------------------------------ readers


def test_kadid_dmos_column_is_a_mos_kept_as_is(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "dmos.csv").write_text(
        "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.25\nI02_25_05.png,I02.png,1.2,0.04\n"
    )
    t = rd.read_kadid10k(tmp_path)
    a, b = t.records
    assert (a.image, a.reference, a.ref_id) == ("images/I01_01_01.png", "images/I01.png", "I01")
    assert a.score == pytest.approx(4.57, abs=1e-12) and a.raw_direction == "higher"
    assert a.score_std == pytest.approx(0.5, abs=1e-12)  # sqrt of the variance 0.25
    assert (a.distortion, a.level) == ("gaussian_blur", 1)
    assert (b.distortion, b.level, b.score) == ("contrast_change", 5, pytest.approx(1.2))
    assert t.score_range == (1.0, 5.0) and t.full_reference


def test_koniq_mos_and_official_split(tmp_path: Path) -> None:
    (tmp_path / "1024x768").mkdir()
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text(
        '"image_name","c1","MOS","SD","MOS_zscore"\n"10004473376.jpg",0,3.82,0.62,77.38\n'
        '"10007357496.jpg",1,3.26,0.56,59.0\n'
    )
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(
        "image_name,MOS,set\n10004473376.jpg,77.38,training\n10007357496.jpg,59.0,test\n"
    )
    t = rd.read_koniq10k(tmp_path)
    assert [r.image for r in t.records] == ["1024x768/10004473376.jpg", "1024x768/10007357496.jpg"]
    assert [r.score for r in t.records] == [pytest.approx(3.82), pytest.approx(3.26)]
    assert [r.split for r in t.records] == ["train", "test"]
    assert not t.full_reference and t.score_range == (1.0, 5.0)


def test_live_dmos_flipped_and_reference_copies_dropped(tmp_path: Path) -> None:
    from scipy.io import savemat

    n = 982
    dmos = np.linspace(0.0, 100.0, n)
    dmos[227] = 10.0  # jpeg/img1.bmp
    orgs = np.zeros(n)
    orgs[[0, 5, 500]] = 1  # reference copies
    refs = np.empty((1, n), dtype=object)
    refs[0, :] = [f"ref{i % 29}.bmp" for i in range(n)]
    savemat(tmp_path / "dmos.mat", {"dmos": dmos[None, :], "orgs": orgs[None, :]})
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": refs})
    t = rd.read_live(tmp_path)
    assert len(t) == n - 3
    by_name = {r.image: r for r in t.records}
    r = by_name["jpeg/img1.bmp"]
    assert r.score == pytest.approx(99.0, abs=1e-9)  # -3 + 112 - 10, by hand
    assert r.score_raw == pytest.approx(10.0) and r.raw_direction == "lower"
    assert r.reference == f"refimgs/ref{227 % 29}.bmp" and r.distortion == "jpeg"
    assert "jp2k/img1.bmp" not in by_name  # orgs = 1
    assert by_name["fastfading/img174.bmp"].score == pytest.approx(109.0 - 100.0)
    # a lower DMOS is a higher score
    assert by_name["jp2k/img2.bmp"].score > by_name["jp2k/img3.bmp"].score


def test_live_wrong_entry_count_is_a_data_error(tmp_path: Path) -> None:
    from scipy.io import savemat

    savemat(tmp_path / "dmos.mat", {"dmos": np.zeros((1, 5)), "orgs": np.zeros((1, 5))})
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": np.array([["a.bmp"] * 5], object)})
    with pytest.raises(DataError, match="expected 982 entries"):
        rd.read_live(tmp_path)


def test_csiq_dmos_flipped_and_case_insensitive_files(tmp_path: Path) -> None:
    _png(tmp_path / "dst_imgs/awgn/1600.AWGN.1.png")
    _png(tmp_path / "src_imgs/1600.png")
    (tmp_path / "csiq.DMOS.csv").write_text(
        "image,dst_type,dst_lev,dmos_std,dmos\n1600,noise,1,0.02,0.2\n1600,jpeg 2000,3,0.1,0.75\n"
    )
    t = rd.read_csiq(tmp_path)
    a, b = t.records
    assert (a.image, a.reference) == ("dst_imgs/awgn/1600.AWGN.1.png", "src_imgs/1600.png")
    assert a.score == pytest.approx(0.8, abs=1e-12) and b.score == pytest.approx(0.25, abs=1e-12)
    assert b.image == "dst_imgs/jpeg2000/1600.jpeg2000.3.png" and b.level == 3
    assert t.score_range == (0.0, 1.0)


def test_tid2013_mos_and_reference_case(tmp_path: Path) -> None:
    (tmp_path / "distorted_images").mkdir()
    _png(tmp_path / "reference_images/I25.BMP")
    (tmp_path / "distorted_images/I25_01_1.bmp").write_bytes(b"")
    (tmp_path / "mos_with_names.txt").write_text("5.51429 i01_01_1.bmp\n3.8649 i25_01_1.bmp\n")
    (tmp_path / "mos_std.txt").write_text("0.1\n0.2\n")
    t = rd.read_tid2013(tmp_path)
    a, b = t.records
    assert a.score == pytest.approx(5.51429) and a.raw_direction == "higher"
    assert a.image == "distorted_images/i01_01_1.bmp" and a.ref_id == "I01"
    assert b.image == "distorted_images/I25_01_1.bmp"  # found despite the case
    assert b.reference == "reference_images/I25.BMP" and b.score_std == pytest.approx(0.2)
    assert (a.distortion, a.level) == ("awgn", 1) and t.score_range == (0.0, 9.0)


def test_pipal_elo(tmp_path: Path) -> None:
    (tmp_path / "Train_Label").mkdir()
    (tmp_path / "Distortion_2").mkdir()
    (tmp_path / "Distortion_2/A0001_00_00.bmp").write_bytes(b"")
    (tmp_path / "Train_Label/A0001.txt").write_text(
        "A0001_00_00.bmp,1520.0648\nA0001_10_03.bmp,916.7\n"
    )
    t = rd.read_pipal(tmp_path)
    a, b = t.records
    assert a.image == "Distortion_2/A0001_00_00.bmp" and a.reference == "Train_Ref/A0001.bmp"
    assert a.score == pytest.approx(1520.0648) and b.score == pytest.approx(916.7)
    assert (b.distortion, b.level, b.ref_id) == ("10", 3, "A0001") and t.raw_scale == "Elo"


def test_clive_and_biq_readers_on_tiny_files(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c/scores.csv").write_text("image,mos,mos_std\n1.JPG,73.5,20.0\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b/scores.csv").write_text(
        "image_name,mos_0_1,upstream_split\nss01 (8).jpg,0.11,test\n"
    )
    c = rd.read_clive(tmp_path / "c").records[0]
    b = rd.read_biq2021(tmp_path / "b").records[0]
    assert (c.image, c.score, c.score_std) == ("1.JPG", 73.5, 20.0)
    assert (b.image, b.score, b.split) == ("ss01 (8).jpg", 0.11, "test")


def test_reader_missing_label_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dmos.csv"):
        rd.read_kadid10k(tmp_path)


@pytest.mark.shared_data
def test_real_clive_scores() -> None:
    root = shared_data_path("clive")
    t = rd.read_clive(root)
    assert len(t) == 627 and t.score_range == (0.0, 100.0)
    first = t.records[0]
    assert first.image == "images/533.JPG" and first.score == pytest.approx(73.6235, abs=1e-9)
    assert first.score_std == pytest.approx(20.4016, abs=1e-9)
    assert all((root / r.image).is_file() for r in t.records)


@pytest.mark.shared_data
def test_real_biq2021_names_with_spaces(tmp_path: Path) -> None:
    root = shared_data_path("biq2021")
    t = rd.read_biq2021(root)
    assert len(t) == 300
    assert t.records[0].image == "images/ss01 (852).jpg"
    assert t.records[0].score == pytest.approx(0.1111, abs=1e-9)
    out = iq.write_table(t, tmp_path / "biq.csv")  # paths relative to the csv's folder
    assert iq.check_table(out, open_images=True) == []
    back = iq.read_table(out)
    assert (back.root / back.records[0].image).resolve() == (root / t.records[0].image).resolve()
    assert [r.split for r in back.records] == [r.split for r in t.records]


# ------------------------------------------------------------------------------ splits


def _table(groups: list[str]) -> iq.MetaTable:
    recs = [
        iq.IqaRecord(image=f"{g}_{i}.png", score=float(i), ref_id=g) for i, g in enumerate(groups)
    ]
    return iq.MetaTable(Path("."), iq._numbered(recs), (0.0, float(len(groups))))


def test_split_folds_no_content_leak_and_partition() -> None:
    groups = [f"r{i % 13}" for i in range(13 * 7)]
    t = _table(groups)
    folds = iq.split_folds(t, 5, seed=3)
    assert len(folds) == 5
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen.tolist()) == list(range(len(groups)))  # each row tested exactly once
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        assert len(train) + len(test) == len(groups)
        assert {len({groups[i] for i in test})} <= {2, 3}  # 13 ids over 5 folds: 3,3,3,2,2
    again = iq.split_folds(t, 5, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = iq.split_folds(t, 5, seed=4)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_split_folds_too_few_groups() -> None:
    with pytest.raises(DataError, match="cannot fill 5 folds"):
        iq.split_folds(_table(["a", "a", "b"]), 5)


# ------------------------------------------------------------------------------ table csv + check


def _fr_table(tmp_path: Path) -> Path:
    _png(tmp_path / "ref/a.png", 1)
    _png(tmp_path / "ref/b.png", 2)
    _png(tmp_path / "dist/a1.png", 3)
    _png(tmp_path / "dist/a2.png", 4)
    _png(tmp_path / "dist/b1.png", 5)
    (tmp_path / "dist/same.png").write_bytes((tmp_path / "ref/a.png").read_bytes())
    path = tmp_path / "t.csv"
    path.write_text(
        "image,reference,score,score_raw,raw_direction,raw_scale,score_min,score_max,ref_id\n"
        "dist/a1.png,ref/a.png,3.0,3.0,higher,1-5 MOS,1,5,a\n"
        "dist/a2.png,ref/a.png,2.0,,,,,,a\n"
        "dist/b1.png,ref/b.png,4.5,,,,,,b\n"
        "dist/same.png,ref/a.png,5.0,,,,,,a\n"
    )
    return path


def test_read_table_defaults_and_round_trip(tmp_path: Path) -> None:
    t = iq.read_table(_fr_table(tmp_path))
    assert t.score_range == (1.0, 5.0) and t.full_reference
    assert [r.image_id for r in t.records] == [0, 1, 2, 3]
    assert t.records[1].score_raw == 2.0 and t.records[1].raw_direction == "higher"
    out = iq.write_table(t, tmp_path / "sub" / "copy.csv")
    back = iq.read_table(out)
    assert back.records[0].image == "../dist/a1.png"
    assert [r.score for r in back.records] == [3.0, 2.0, 4.5, 5.0]
    assert iq.check_table(out) == []


def test_check_reports_each_defect_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _png(tmp_path / "ok.png")
    _png(tmp_path / "r.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    path = tmp_path / "bad.csv"
    path.write_text(
        "image,reference,score,score_min,score_max,image_id\n"
        "ok.png,r.png,3,1,5,0\n"
        "missing.png,r.png,3,1,5,1\n"  # missing image
        "ok.png,gone.png,3,1,5,2\n"  # missing reference
        "broken.png,r.png,7,1,5,2\n"  # corrupt image, score outside, duplicate id (with line 4)
    )
    problems = iq.check_table(path)
    kinds = sorted((p.record, p.kind) for p in problems)
    assert kinds == [
        ("line 3", "image"),
        ("line 4", "duplicate"),
        ("line 4", "reference"),
        ("line 5", "duplicate"),
        ("line 5", "image"),
        ("line 5", "range"),
    ]
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert sum("line " in ln for ln in out) == 6
    assert any("missing.png" in ln and "not found" in ln for ln in out)
    assert any("gone.png" in ln for ln in out)
    assert any("score 7 outside the declared range [1, 5]" in ln for ln in out)


def test_check_cli_ok_and_unreadable_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", str(_fr_table(tmp_path))]) == 0
    assert "OK: 4 images (full-reference), 2 content ids" in capsys.readouterr().out
    (tmp_path / "nos.csv").write_text("image,mos\na.png,3\n")
    assert main(["data", "check", str(tmp_path / "nos.csv")]) == 1
    assert "missing column(s) score" in capsys.readouterr().out


def test_read_table_rejects_bad_direction(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("image,score,raw_direction\na.png,1,down\n")
    with pytest.raises(DataError, match="line 2: raw_direction"):
        iq.read_table(tmp_path / "t.csv")


# ------------------------------------------------------------------------------ dataset


def test_registered_dataset_items_and_meta(tmp_path: Path) -> None:
    import_all()
    path = _fr_table(tmp_path)
    cfg = iq.IqaTableConfig(table=str(path), split="all")
    ds = DATASETS.build("iqa_table", cfg, root=str(tmp_path), train=False)
    assert len(ds) == 4
    assert ds.meta == {
        "score_range": [1.0, 5.0],
        "full_reference": True,
        "raw_direction": "higher",
        "raw_scale": "mixed",  # only row 1 states its scale
        "num_images": 4,
    }
    img, target = ds[0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 20, 24)
    assert target["score"].dtype == torch.float32 and target["score"].shape == ()
    assert float(target["score"]) == 3.0 and target["image_id"] == 0
    expected_ref = np.array(Image.open(tmp_path / "ref/a.png"))
    assert torch.equal(target["reference"], torch.from_numpy(expected_ref).permute(2, 0, 1))


def test_dataset_pair_crop_and_flip_stay_aligned(tmp_path: Path) -> None:
    table = iq.read_table(_fr_table(tmp_path))
    ds = iq.IqaTableDataset(table, [3], crop=8, train=True)  # row 3: image == its reference
    for seed in range(6):
        torch.manual_seed(seed)
        img, target = ds[0]
        assert tuple(img.shape) == (3, 8, 8) and torch.equal(img, target["reference"])
    centre = iq.IqaTableDataset(table, [0], crop=8, train=False)[0][0]
    full = torch.from_numpy(np.array(Image.open(tmp_path / "dist/a1.png"))).permute(2, 0, 1)
    assert torch.equal(centre, full[:, 6:14, 8:16])  # (20-8)//2, (24-8)//2


def test_dataset_folds_by_content(tmp_path: Path) -> None:
    path = _fr_table(tmp_path)
    make = lambda split: iq.build_iqa_table(  # noqa: E731
        iq.IqaTableConfig(table=str(path), split=split, num_folds=2, fold=0), train=True
    )
    train, test = make("train"), make("test")
    assert sorted(train.image_ids + test.image_ids) == [0, 1, 2, 3]
    groups = lambda d: {d.record(i).ref_id for i in range(len(d))}  # noqa: E731
    assert not groups(train) & groups(test)


def test_corrupt_image_and_missing_reference_name_the_file(tmp_path: Path) -> None:
    _png(tmp_path / "r.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    _png(tmp_path / "ok.png")
    (tmp_path / "t.csv").write_text(
        "image,reference,score\nbad.png,r.png,1\nok.png,nowhere/ref.png,2\n"
    )
    ds = iq.IqaTableDataset(iq.read_table(tmp_path / "t.csv"))
    with pytest.raises(DataError, match=r"image_id 0: image file .*bad\.png"):
        ds[0]
    with pytest.raises(
        DataError, match=r"image_id 1: reference file not found: .*nowhere/ref\.png"
    ):
        ds[1]


def test_mixed_reference_table_refused(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("image,reference,score\na.png,r.png,1\nb.png,,2\n")
    with pytest.raises(DataError, match="some rows have a reference"):
        iq.IqaTableDataset(iq.read_table(tmp_path / "t.csv"))


def test_flip_score_by_hand() -> None:
    assert iq.flip_score(0.2, 0.0, 1.0, "lower") == pytest.approx(0.8)
    assert iq.flip_score(3.0, 1.0, 5.0, "higher") == 3.0
    assert math.isclose(iq.flip_score(-2.6, -3.0, 112.0, "lower"), 111.6)


# ------------------------------------------------------- reader option, official split, convert


def _tiny_biq(tmp_path: Path) -> Path:
    """A BIQ2021-layout folder: 4 images (names with spaces), official splits train/test."""
    root = tmp_path / "biq"
    (root / "images").mkdir(parents=True)
    lines = ["image_name,mos_0_1,upstream_split"]
    for i, (score, split) in enumerate(
        [(0.1, "train"), (0.7, "test"), (0.4, "train"), (0.9, "test")]
    ):
        _png(root / "images" / f"ss01 ({i}).jpg".replace(".jpg", ".png"), seed=i)
        lines.append(f"ss01 ({i}).png,{score},{split}")
    (root / "scores.csv").write_text("\n".join(lines) + "\n")
    return root


def test_dataset_reads_a_dataset_folder_through_its_reader(tmp_path: Path) -> None:
    root = _tiny_biq(tmp_path)
    cfg = iq.IqaTableConfig(table="biq", reader="biq2021", split="all")
    ds = iq.build_iqa_table(cfg, root=str(tmp_path), train=False)  # relative to data.root
    assert len(ds) == 4 and ds.meta["score_range"] == [0.0, 1.0]
    img, target = ds[2]
    expected = np.array(Image.open(root / "images" / "ss01 (2).png"))
    assert torch.equal(img, torch.from_numpy(expected).permute(2, 0, 1))
    assert float(target["score"]) == pytest.approx(0.4, abs=1e-7)


def test_official_split_selects_rows_by_the_split_column(tmp_path: Path) -> None:
    _tiny_biq(tmp_path)
    make = lambda split: iq.build_iqa_table(  # noqa: E731
        iq.IqaTableConfig(table="biq", reader="biq2021", split=split), root=str(tmp_path)
    )
    assert make("official:test").image_ids == [1, 3]
    assert make("official:train").image_ids == [0, 2]
    with pytest.raises(
        DataError, match=r"no row has official split 'val' \(the table has: test, train\)"
    ):
        make("official:val")


def test_official_split_without_a_split_column_and_bad_reader(tmp_path: Path) -> None:
    path = _fr_table(tmp_path)
    with pytest.raises(DataError, match="no official split column"):
        iq.build_iqa_table(iq.IqaTableConfig(table=str(path), split="official:test"))
    with pytest.raises(DataError, match=r"'reader' must be one of .*clive.*not 'clvie'"):
        iq.build_iqa_table(iq.IqaTableConfig(table=str(tmp_path), reader="clvie"))
    with pytest.raises(DataError, match="clive dataset folder 'nowhere' not found"):
        iq.build_iqa_table(iq.IqaTableConfig(table="nowhere", reader="clive"), root=str(tmp_path))


def test_cli_convert_writes_a_meta_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _tiny_biq(tmp_path)
    out = tmp_path / "tables" / "biq.csv"
    assert main(["data", "convert", "biq2021", str(root), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "4 images (no-reference)" in said and "scores 0..1" in said
    back = iq.read_table(out)
    assert [r.score for r in back.records] == pytest.approx([0.1, 0.7, 0.4, 0.9], abs=1e-9)
    assert [r.split for r in back.records] == ["train", "test", "train", "test"]
    assert iq.check_table(out, open_images=True) == []
    assert main(["data", "convert", "clive", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "clive dataset folder not found" in capsys.readouterr().err


def test_cli_convert_formats_are_the_readers() -> None:
    from percepta.cli import IQA_FORMATS

    assert sorted(IQA_FORMATS) == sorted(rd.READERS)
