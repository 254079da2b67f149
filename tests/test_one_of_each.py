"""One of each: one COCO validator, one JSON reader, one 3x3 peak picker, one ``machine()``.

* The annotation checker (``percepta data check`` / the dataset loader), the evaluator's ground
  truth and the results-file checker give the same verdict on the same borderline record; the
  expected verdicts are written down from the rules (``percepta.data.check`` docstring), and the
  zero-size rule is checked against pycocotools itself.
* Every JSON file reader reports malformed JSON the same way, at the line/column that
  ``json`` itself reports (computed by hand below).
* The decode and both export graphs go through ``centernet_decode.peak_mask``, which matches an
  independent ``scipy.ndimage.maximum_filter`` reference.
* The benchmark scripts share ``benchmarks/_common.py`` and run from any working directory.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.data.check import CheckReport, check_coco, check_coco_dict
from percepta.detection.coco_results import load_ground_truth, load_results, results_to_array
from percepta.errors import DataError
from percepta.jsonable import InvalidJsonError, read_json

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

# --------------------------------------------------------------------------------------------
# one COCO validator


def _gt() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 2, 30, 40],
                "area": 1200.0,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 2,
                "bbox": [5, 5, 10, 10],
                "area": 100.0,
                "iscrowd": 0,
            },
        ],
    }


# (bbox, accepted?) from the rules: finite numbers (numpy too, booleans not), w >= 0 and h >= 0
BBOX_CASES = {
    "zero_width": ([10, 10, 0, 5], True),
    "negative_width": ([10, 10, -3, 5], False),
    "nan": ([10, float("nan"), 3, 5], False),
    "infinite": ([10, 10, float("inf"), 5], False),
    "boolean": ([True, 10, 3, 5], False),  # was accepted by the results fast path only
    "numpy_float32": ([np.float32(10.5), 10, 3, 5], True),  # was refused by the checker only
}


def _annotation_verdicts(mutate) -> tuple[bool, bool]:
    """(accepted by the annotation checker, accepted by the evaluator's ground truth)."""
    data = _gt()
    mutate(data["annotations"][1])
    report = CheckReport(file="gt.json")
    check_coco_dict(data, report)
    try:
        load_ground_truth(data)
        gt_ok = True
    except DataError as e:
        gt_ok = False
        assert "annotations[1]" in str(e) and "annotation id 2" in str(e), str(e)
    for p in report.errors:
        assert p.record == "annotation id 2" and p.file == "gt.json", p
    return report.ok, gt_ok


def _results_verdict(bbox, score=0.9) -> bool:
    gt = load_ground_truth(_gt())
    records = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": 2, "category_id": 2, "bbox": bbox, "score": score},
        {"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.1},
    ]
    try:
        results_to_array(records, gt, source="dets.json")
        return True
    except DataError as e:
        msg = str(e)
        assert msg.startswith("dets.json: detection [1] (image_id=2, category_id=2)"), msg
        return False


@pytest.mark.parametrize("case", sorted(BBOX_CASES))
def test_every_path_gives_the_same_verdict_on_a_borderline_box(case):
    bbox, accepted = BBOX_CASES[case]
    checker, gt = _annotation_verdicts(lambda a: a.update(bbox=list(bbox)))
    results = _results_verdict(list(bbox))
    assert (checker, gt, results) == (accepted, accepted, accepted)


@pytest.mark.parametrize(
    "field, value, accepted",
    [
        ("area", -5.0, False),  # was accepted by the evaluator's ground truth
        ("area", 0.0, True),
        ("area", float("nan"), False),
        ("iscrowd", 2, False),  # was accepted by the evaluator's ground truth
        ("iscrowd", True, True),
        ("category_id", np.int64(2), True),  # numpy ids: was refused by the checker only
    ],
)
def test_annotation_fields_same_verdict_in_checker_and_ground_truth(field, value, accepted):
    assert _annotation_verdicts(lambda a: a.update({field: value})) == (accepted, accepted)


@pytest.mark.parametrize(
    "score, accepted", [(True, False), (np.float32(0.25), True), (float("nan"), False), (0, True)]
)
def test_results_score_rule(score, accepted):
    assert _results_verdict([1, 2, 3, 4], score=score) is accepted


def test_zero_size_rule_matches_pycocotools():
    """The reason zero-size boxes are valid: the COCO tools load them (area 0) and evaluate."""
    from pycocotools.coco import COCO

    data = _gt()
    data["annotations"][1]["bbox"] = [5, 5, 0, 10]
    data["annotations"][1]["area"] = 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(data)
        coco.createIndex()
        dt = coco.loadRes([{"image_id": 2, "category_id": 2, "bbox": [5, 5, 0, 10], "score": 0.5}])
    assert dt.anns[1]["area"] == 0
    gt = load_ground_truth(data)
    assert gt.ann_areas.tolist() == [1200.0, 0.0]  # kept for evaluation, as pycocotools does
    report = CheckReport(file="gt.json")
    check_coco_dict(data, report)
    assert [(p.severity, p.kind) for p in report.problems] == [("warning", "zero_size_box")]


# --------------------------------------------------------------------------------------------
# one JSON reader

BAD = '{\n  "images": [],\n  "annotations": [,\n'  # json stops at the comma: line 3, col 19
BAD_LINE, BAD_COL = 3, BAD.splitlines()[2].index(",") + 1


def test_read_json_locates_the_syntax_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(BAD)
    with pytest.raises(InvalidJsonError) as e:
        read_json(p, "test")
    assert (e.value.lineno, e.value.colno) == (BAD_LINE, BAD_COL) == (3, 19)
    assert str(e.value).startswith(f"{p}: invalid JSON at line 3 col 19 (")
    assert isinstance(e.value, DataError)


def test_read_json_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: test file not found"):
        read_json(tmp_path / "nope.json", "test")
    with pytest.raises(DataError, match="got a folder"):
        read_json(tmp_path, "test")
    (tmp_path / "e.json").write_text(" \n")
    with pytest.raises(DataError, match=r"e\.json: the test file is empty \(hint\)"):
        read_json(tmp_path / "e.json", "test", empty_hint=" (hint)")
    (tmp_path / "b.json").write_bytes(b'["\xff"]')
    with pytest.raises(DataError, match=r"b\.json: the test file is not UTF-8 text .* at byte 2"):
        read_json(tmp_path / "b.json", "test")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf[1, NaN]")
    out = read_json(tmp_path / "bom.json", "test")
    assert out[0] == 1 and np.isnan(out[1])
    assert read_json("named.json", "test", text='{"a": 2}') == {"a": 2}


def test_every_json_reader_reports_the_same_location(tmp_path):
    from percepta.data.subset import coco_subset
    from percepta.quality.score_io import read_scores
    from percepta.scene_graph.results_io import load_zero_shot_triplets, read_results_file

    p = tmp_path / "bad.json"
    p.write_text(BAD)
    needle = f"{p}: invalid JSON at line 3 col 19"
    readers = {
        "results": lambda: load_results(p, load_ground_truth(_gt())),
        "ground truth": lambda: load_ground_truth(p),
        "score file": lambda: read_scores(p, "pred"),
        "scene-graph results": lambda: read_results_file(p),
        "zero-shot triplets": lambda: load_zero_shot_triplets(str(p)),
        "coco subset": lambda: coco_subset(p, tmp_path / "out.json"),
    }
    for name, read in readers.items():
        with pytest.raises(DataError) as e:
            read()
        assert needle in str(e.value), (name, str(e.value))
    report = check_coco(p, open_images=False)
    assert [(x.kind, x.record) for x in report.problems] == [("invalid_json", "line 3 col 19")]
    assert report.problems[0].message.startswith("invalid JSON at line 3 col 19")


# --------------------------------------------------------------------------------------------
# one peak picker


def _scipy_peaks(heat: np.ndarray) -> np.ndarray:
    """Independent reference: 3x3 maximum filter (outside = -inf), keep pixels equal to it."""
    from scipy.ndimage import maximum_filter

    hmax = maximum_filter(heat, size=(1, 1, 3, 3), mode="constant", cval=-np.inf)
    return heat * (heat == hmax)


def _heat() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    heat = torch.sigmoid(torch.randn(2, 3, 20, 24, generator=g) * 3 - 2)
    heat[0, 1, 3:8, 3:8] = 0.1
    heat[0, 1, 4:7, 4:7] = 0.8  # plateau: all tied pixels are peaks
    return heat


def test_peak_mask_matches_an_independent_reference():
    from percepta.detection.centernet_decode import peak_mask

    heat = _heat()
    ref = _scipy_peaks(heat.numpy())
    np.testing.assert_array_equal(peak_mask(heat).numpy(), ref)
    assert (ref[0, 1, 4:7, 4:7] == np.float32(0.8)).all()
    half = heat.half()
    free = peak_mask(half, equality_free=True)
    assert free.dtype == torch.float32  # computed in float32 whatever the input (no fp16 NaN)
    ref = _scipy_peaks(half.float().numpy())
    big = ref >= 2.0**-6  # bit-identical above the documented leak scale
    np.testing.assert_array_equal(free.numpy()[big], ref[big])
    assert float(np.abs(free.numpy() - ref)[~big].max()) <= 0.0042


def test_decode_and_both_export_graphs_use_the_one_peak_picker(monkeypatch):
    import percepta.detection.centernet_decode as cd
    from percepta.export.onnx import DetectionGraph, PeaksGraph, peaks_only

    calls: list[bool] = []
    real = cd.peak_mask

    def spy(heat, kernel=3, *, equality_free=False):
        calls.append(equality_free)
        return real(heat, kernel, equality_free=equality_free)

    monkeypatch.setattr(cd, "peak_mask", spy)
    heat = _heat()
    peaks_only(heat)
    assert calls == [True]

    class Heads(torch.nn.Module):  # the model surface the graphs use, without a network
        stride, cat_spec_wh = 4, False

        def forward_heads(self, images):
            return {"heat": heat, "wh": torch.ones(2, 2, 20, 24), "reg": torch.zeros(2, 2, 20, 24)}

    PeaksGraph(Heads())(torch.zeros(2, 3, 80, 96))
    DetectionGraph(Heads(), top_k=10)(torch.zeros(2, 3, 80, 96))
    cd.decode(heat, torch.ones(2, 2, 20, 24), None, k=5)
    assert calls == [True, True, False, False]


# --------------------------------------------------------------------------------------------
# one machine()


def _bench_scripts() -> list[Path]:
    return sorted(BENCH.glob("bench_*.py"))


def test_only_the_shared_module_defines_machine_and_the_printer():
    scripts = _bench_scripts()
    assert len(scripts) >= 4
    for path in scripts:
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert "machine" not in defined and "emit" not in defined, path.name
        imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "_common"]
        assert imports and {a.name for a in imports[0].names} >= {"machine", "emit"}, path.name


def test_emit_prints_the_json_line(capsys):
    spec = importlib.util.spec_from_file_location("_bench_common_under_test", BENCH / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = mod.emit("x", 0.5, 2.0, extra=1, machine=mod.machine("numpy", threads=3))
    line = json.loads(capsys.readouterr().out)
    assert line == row and list(line)[:4] == ["bench", "ours", "baseline", "ratio"]
    assert line["ratio"] == pytest.approx(4.0, abs=1e-12) and line["extra"] == 1
    assert line["machine"]["numpy"] == np.__version__ and line["machine"]["threads"] == 3
    assert mod.emit("y", 0.0, 1.0)["ratio"] is None


@pytest.mark.slow
def test_benchmarks_run_from_another_directory(tmp_path):
    for path in _bench_scripts():  # module-level imports, including _common, then argparse
        done = subprocess.run(
            [sys.executable, str(path), "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (path.name, done.stderr[-2000:])
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_det_eval.py"), "--images", "12", "--repeat", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    assert [r["bench"] for r in rows] == ["det_eval.coco_ap", "det_eval.olrp_overhead"]
    for r in rows:
        assert r["ours"] > 0 and r["baseline"] > 0 and r["ratio"] > 0
        assert r["machine"]["cpu_count"] >= 1 and "faster_coco_eval" in r["machine"]
