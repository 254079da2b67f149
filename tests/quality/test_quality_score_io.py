"""Reading prediction / MOS files: accepted layouts and one clear DataError per defect."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from percepta.errors import DataError
from percepta.quality.score_io import align_scores, read_scores


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_layouts(tmp_path):
    p = write(tmp_path / "p.csv", "model,score,image\nm,0.5,a.png\nm,0.25,b.png\n\n")
    m = write(tmp_path / "m.csv", "\ufeffimage,mos,mos_std\nb.png,2.0,0.5\na.png,4.5,\n")
    pred, mos = read_scores(p, "pred"), read_scores(m, "mos")
    assert pred.scores == {"a.png": 0.5, "b.png": 0.25}
    assert mos.scores == {"b.png": 2.0, "a.png": 4.5} and mos.std == {"b.png": 0.5}
    ids, x, y = align_scores(pred, mos)
    assert ids == ["b.png", "a.png"]  # MOS file order
    assert np.array_equal(x, [0.25, 0.5]) and np.array_equal(y, [2.0, 4.5])
    t = write(tmp_path / "p.tsv", "image\tscore\na.png\t1\n")
    assert read_scores(t, "pred").scores == {"a.png": 1.0}


def test_json_layouts(tmp_path):
    p = write(tmp_path / "p.json", json.dumps({"a.png": 0.5, "7": 1}))
    assert read_scores(p, "pred").scores == {"a.png": 0.5, "7": 1.0}
    recs = [{"image": "a.png", "mos": 3.0, "mos_std": 0.1}, {"image": 7, "score": 2.5}]
    m = write(tmp_path / "m.json", json.dumps(recs))
    mos = read_scores(m, "mos")
    assert mos.scores == {"a.png": 3.0, "7": 2.5} and mos.std == {"a.png": 0.1}
    sniffed = write(tmp_path / "scores.out", json.dumps({"x": 1.0}))
    assert read_scores(sniffed, "pred").scores == {"x": 1.0}


@pytest.mark.shared_data
def test_shared_clive_scores_file():
    """LIVE-Challenge's scores.csv (image,mos,mos_std) from ../shared/data, when present."""
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    root = Path(os.environ.get("PERCEPTA_SHARED_DATA", default))
    path = root / "clive" / "scores.csv"
    if not path.is_file():
        pytest.skip(f"shared dataset not found at {path} (set PERCEPTA_SHARED_DATA)")
    mos = read_scores(path, "mos")
    assert len(mos) > 500 and len(mos.std) == len(mos)
    assert all(0 <= v <= 100 for v in mos.scores.values())


@pytest.mark.parametrize(
    "name,text,kind,pattern",
    [
        (
            "p.csv",
            "image,value\na,1\n",
            "pred",
            r"p\.csv: line 1: header has no column 'score'.*found: image, value",
        ),
        ("m.csv", "img,mos\na,1\n", "mos", r"m\.csv: line 1: header has no column 'image'"),
        (
            "p.csv",
            "image,score\na,0.1\nb,nan\n",
            "pred",
            r"p\.csv: line 3 \(image 'b'\): 'score' is 'nan'",
        ),
        (
            "p.csv",
            "image,score\na,0.1\nb,\n",
            "pred",
            r"p\.csv: line 3 \(image 'b'\): 'score' is empty",
        ),
        (
            "p.csv",
            "image,score\na,0.1\nb,good\n",
            "pred",
            r"line 3 \(image 'b'\): 'score' is not a number: 'good'",
        ),
        (
            "p.csv",
            "image,score\na,0.1\nb,0.2\na,0.3\n",
            "pred",
            r"p\.csv: line 4: duplicate image id 'a' \(first at line 2\)",
        ),
        ("p.csv", "image,score\na\n", "pred", r"line 2: has 1 fields"),
        ("p.csv", "", "pred", r"p\.csv: empty file"),
        ("p.csv", "image,score\n", "pred", r"p\.csv: no scores found"),
        (
            "p.json",
            '{"a": 0.1, "b": null}',
            "pred",
            r"p\.json: image 'b': 'value' must be a number, got null",
        ),
        ("p.json", '{"a": NaN}', "pred", r"p\.json: image 'a': 'value' is nan"),
        (
            "p.json",
            '{"a": 0.1, "a": 0.2}',
            "pred",
            None,
        ),  # JSON keeps the last duplicate key: allowed
        (
            "p.json",
            '[{"image": "a", "score": 1}, {"image": "a", "score": 2}]',
            "pred",
            r"p\.json: record 1: duplicate image id 'a' \(first at record 0\)",
        ),
        (
            "p.json",
            '[{"image": "a", "mos": 1}]',
            "pred",
            r"record 0 \(image 'a'\): missing key 'score'",
        ),
        ("m.json", '[{"mos": 1}]', "mos", r"m\.json: record 0: missing key 'image'"),
        ("m.json", "[3.5]", "mos", r"m\.json: record 0: expected an object"),
        ("m.json", '"hello"', "mos", r"m\.json: expected a JSON object"),
        ("m.json", '{"a": 1,', "mos", r"m\.json: invalid JSON at line 1"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, name, text, kind, pattern):
    path = write(tmp_path / name, text)
    if pattern is None:
        assert read_scores(path, kind).scores == {"a": 0.2}
        return
    with pytest.raises(DataError, match=pattern):
        read_scores(path, kind)


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_scores(tmp_path / "nope.csv", "pred")
    with pytest.raises(DataError, match="is a directory"):
        read_scores(tmp_path, "pred")
    bad = tmp_path / "bin.csv"
    bad.write_bytes(b"image,score\n\xff\xfe\x00a,1\n")
    with pytest.raises(DataError, match=r"bin\.csv: not a UTF-8 text file"):
        read_scores(bad, "pred")


def test_mismatched_ids_name_both_sides(tmp_path):
    pred = read_scores(write(tmp_path / "p.csv", "image,score\na,1\nb,2\nx,3\n"), "pred")
    mos = read_scores(write(tmp_path / "m.csv", "image,mos\na,1\nb,2\nc,3\nd,4\n"), "mos")
    with pytest.raises(DataError) as e:
        align_scores(pred, mos)
    msg = str(e.value)
    assert "missing from predictions" in msg and "p.csv: 2 ('c', 'd')" in msg
    assert "missing from MOS file" in msg and "m.csv: 1 ('x')" in msg


def test_long_id_lists_are_truncated(tmp_path):
    pred = read_scores(write(tmp_path / "p.csv", "image,score\na,1\n"), "pred")
    rows = "".join(f"i{k},{k}\n" for k in range(30))
    mos = read_scores(write(tmp_path / "m.csv", "image,mos\na,1\n" + rows), "mos")
    with pytest.raises(DataError, match=r"30 \('i0'.*'i9' and 20 more\)"):
        align_scores(pred, mos)
