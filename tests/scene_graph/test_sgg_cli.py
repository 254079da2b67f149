"""``percepta score scene-graph FILE.json``: table, --json, --mode, --plot, file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from percepta.cli import main
from percepta.errors import DataError
from percepta.scene_graph.evaluation import cli_score

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sgg"


def args(file, **kw):
    import argparse

    base = {"file": str(file), "mode": None, "box_convention": "vg", "json": False, "plot": None}
    base.update(kw)
    return argparse.Namespace(**base)


def write(tmp_path, obj, name="r.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_json_output_matches_the_official_numbers(capsys):
    data = json.loads((FIXTURES / "tiny_sgdet.json").read_text())
    assert main(["score", "scene-graph", str(FIXTURES / "tiny_sgdet.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k, v in data["expected"]["metrics"].items():
        if not k.startswith("det_"):
            assert out[k] == pytest.approx(v, abs=1e-9), k
    assert "A@20" not in out and out["images"]["seen"] == 3
    assert out["per_image"]["R"]["20"] == data["expected"]["per_image"]["R"]["20"]


def test_table_output_and_unwrapped_file(tmp_path, capsys):
    data = json.loads((FIXTURES / "tiny_predcls.json").read_text())
    assert cli_score(args(FIXTURES / "tiny_predcls.json")) == 0
    wrapped = capsys.readouterr().out
    assert (
        "SGG eval:     R @ 20: 1.0000;     R @ 50: 1.0000;     R @ 100: 1.0000;  for mode=predcls"
        in wrapped
    )
    assert "SGG eval:     A @ 20: 0.6667;" in wrapped and "images: 1 seen, 1 evaluated" in wrapped
    assert cli_score(args(write(tmp_path, data["inputs"]))) == 0  # the same object without "inputs"
    assert capsys.readouterr().out == wrapped


def test_mode_override_plot_and_nan_as_null(tmp_path, capsys):
    data = json.loads((FIXTURES / "predcls.json").read_text())["inputs"]
    data.pop("zeroshot_triplets")
    png = tmp_path / "plots" / "bars.png"
    assert cli_score(args(write(tmp_path, data), mode="sgdet", json=True, plot=str(png))) == 0
    out = json.loads(capsys.readouterr().out)
    assert "A@20" not in out and out["zR@20"] is None  # no zero-shot list: NaN -> null
    assert out["R@100"] == pytest.approx(
        0.43135873904935806, abs=1e-9
    )  # boxes equal GT: same as predcls
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_string_ids_and_absent_predictions(tmp_path, capsys):
    data = json.loads((FIXTURES / "tiny_sgdet.json").read_text())["inputs"]
    for i, rec in enumerate(data["images"]):
        rec["image_id"] = f"img_{i}"
    extra = {k: v for k, v in data["images"][0].items() if k.startswith("gt_") or k == "image_id"}
    extra["image_id"] = "gt_only"
    data["images"].append(extra)  # in the GT, absent from the predictions
    assert cli_score(args(write(tmp_path, data), json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_image"]["evaluated_image_ids"] == ["img_0"]
    assert out["images"]["skipped_no_prediction"] == 1 and out["images"]["seen"] == 4


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d["images"].append(dict(d["images"][0])), r"duplicate image id 0"),
        (lambda d: d["images"][1].pop("rel_pair_idxs"), r"image 1: missing 'rel_pair_idxs'"),
        (lambda d: d["images"][0].pop("gt_rels"), r"image 0: missing 'gt_rels'"),
        (
            lambda d: d["images"][0].__setitem__("rel_scores", [[0.5] * 50] * 4),
            r"image 0: field 'rel_scores' has shape \[4, 50\]",
        ),
        (
            lambda d: d["images"][0].__setitem__("rel_pair_idxs", [[0, 1], [1, 2], [2, 3], [3, 9]]),
            r"image 0: 'rel_pair_idxs' row 3 = \[3, 9\] is out of range",
        ),
        (lambda d: d.pop("images"), r"missing 'images'"),
        (lambda d: d.pop("mode"), r"'mode' must be one of"),
        (lambda d: d.__setitem__("k_values", [0]), r"'k_values'"),
    ],
)
def test_bad_files_raise_one_data_error(tmp_path, edit, match):
    data = json.loads((FIXTURES / "tiny_sgdet.json").read_text())["inputs"]
    edit(data)
    with pytest.raises(DataError, match=match):
        cli_score(args(write(tmp_path, data)))


def test_cli_prints_error_without_traceback(tmp_path, capsys):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    assert main(["score", "scene-graph", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.json" in err and "Traceback" not in err


@pytest.mark.parametrize("ids", ["int", "str"])
def test_bad_record_error_names_the_file_and_the_image(tmp_path, capsys, ids):
    data = json.loads((FIXTURES / "tiny_sgdet.json").read_text())["inputs"]
    if ids == "str":
        for i, rec in enumerate(data["images"]):
            rec["image_id"] = f"img_{i}"
    data["images"][1]["rel_pair_idxs"] = [[7, 0]]  # image 1 has 2 predicted boxes
    path = write(tmp_path, data, "bad_record.json")
    shown = "1" if ids == "int" else "'img_1'"
    assert main(["score", "scene-graph", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert err.startswith(
        f"error: {path}: image {shown}: 'rel_pair_idxs' row 0 = [7, 0] is out of range"
    )
