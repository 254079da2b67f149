"""``percepta score quality`` end to end through percepta.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from percepta.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "iqa"
CASE = json.loads((FIXTURES / "c05_n50_linear_noise.json").read_text())


@pytest.fixture()
def files(tmp_path):
    ids = [f"img_{i:03d}.png" for i in range(CASE["n"])]
    pred = tmp_path / "pred.csv"
    pred.write_text("image,score\n" + "".join(f"{i},{v!r}\n" for i, v in zip(ids, CASE["pred"])))
    mos = tmp_path / "mos.json"  # records, in reverse order: pairing is by id, not position
    mos.write_text(
        json.dumps([{"image": i, "mos": v} for i, v in reversed(list(zip(ids, CASE["mos"])))])
    )
    return pred, mos


def test_json_output_matches_reference(files, capsys):
    pred, mos = files
    assert main(["score", "quality", "--pred", str(pred), "--mos", str(mos), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "n",
        "srocc",
        "krocc",
        "plcc",
        "rmse",
        "plcc_logistic4",
        "rmse_logistic4",
        "plcc_logistic5",
        "rmse_logistic5",
    ):
        assert key in out
    exp, tol = CASE["expected"], CASE["tolerance"]
    assert out["n"] == 50
    assert out["srocc"] == pytest.approx(exp["srocc"], abs=tol["srocc"])
    assert out["krocc"] == pytest.approx(exp["krocc"], abs=tol["krocc"])
    assert out["plcc"] == pytest.approx(exp["plcc"], abs=tol["plcc"])
    assert out["rmse"] == pytest.approx(exp["rmse_no_fit"], abs=tol["rmse_no_fit"])
    assert out["plcc_logistic4"] == pytest.approx(
        exp["logistic4"]["plcc"], abs=tol["logistic4_plcc"]
    )
    assert out["rmse_logistic5"] == pytest.approx(
        exp["logistic5"]["rmse"], abs=tol["logistic5_rmse"]
    )


def test_table_and_plot(files, tmp_path, capsys):
    pred, mos = files
    png = tmp_path / "out" / "scatter.png"
    rc = main(
        [
            "score",
            "quality",
            "--pred",
            str(pred),
            "--mos",
            str(mos),
            "--lower-is-better",
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "SROCC" in text and "logistic5" in text and "DMOS" in text
    assert f"{-CASE['expected']['srocc']:.4f}" in text  # sign flipped for DMOS targets
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_constant_predictions_print_null_and_warning(tmp_path, capsys):
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({f"i{k}": 0.5 for k in range(8)}))
    mos = tmp_path / "m.csv"
    mos.write_text("image,mos\n" + "".join(f"i{k},{k}\n" for k in range(8)))
    assert main(["score", "quality", "--pred", str(pred), "--mos", str(mos), "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["srocc"] is None and out["plcc_logistic4"] is None and out["rmse"] is not None
    assert "warning: constant predictions" in cap.err


@pytest.mark.parametrize(
    "pred_text,mos_text,pattern",
    [
        (
            "image,score\na,1\nb,2\n",
            "image,mos\na,1\nc,2\n",
            "missing from predictions .*'c'.*missing from MOS file .*'b'",
        ),
        ("image,score\na,1\na,2\n", "image,mos\na,1\n", "line 3: duplicate image id 'a'"),
        ("image,pred\na,1\n", "image,mos\na,1\n", "header has no column 'score'"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, pred_text, mos_text, pattern):
    import re

    (tmp_path / "p.csv").write_text(pred_text)
    (tmp_path / "m.csv").write_text(mos_text)
    rc = main(
        ["score", "quality", "--pred", str(tmp_path / "p.csv"), "--mos", str(tmp_path / "m.csv")]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(pattern, err)
