"""QualityEvaluator against the scipy 1.17.1 reference vectors (tests/fixtures/iqa, see PROVENANCE.md)."""

from __future__ import annotations

import json
import math
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.quality.evaluation import QualityEvaluator
from percepta.quality.logistic import curve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "iqa"
CASES = sorted(p.stem for p in FIXTURES.glob("c*.json"))


def load_case(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@cache
def evaluated(name: str, higher_is_better: bool = True) -> tuple[dict, tuple[str, ...]]:
    """Run the evaluator on a case, fed in three uneven batches of mixed input types."""
    case = load_case(name)
    pred, mos = case["pred"], case["mos"]
    ev = QualityEvaluator(higher_is_better=higher_is_better)
    a, b = len(pred) // 3, 2 * len(pred) // 3
    ev.update(torch.tensor(pred[:a], dtype=torch.float64), mos[:a])
    ev.update(
        [{"score": torch.tensor(v, dtype=torch.float64)} for v in pred[a:b]],
        [{"score": v} for v in mos[a:b]],
    )
    ev.update(np.array(pred[b:]), torch.tensor(mos[b:], dtype=torch.float64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ev.compute()
    return result, tuple(str(w.message) for w in caught)


def test_fixture_set_is_complete():
    assert CASES == [
        "c01_n5_exact_linear",
        "c02_n5_reversed",
        "c03_n10_ties_both",
        "c05_n50_linear_noise",
        "c08_n500_dmos_negative",
        "c12_n30_constant_pred",
    ]


@pytest.mark.parametrize("name", CASES)
def test_raw_metrics_match_reference(name):
    case = load_case(name)
    exp, tol = case["expected"], case["tolerance"]
    result, _ = evaluated(name)
    assert result["n"] == case["n"]
    for key, ref_key in (
        ("srocc", "srocc"),
        ("krocc", "krocc"),
        ("plcc", "plcc"),
        ("rmse", "rmse_no_fit"),
    ):
        ref = exp[ref_key]
        if ref is None:
            assert math.isnan(result[key]), f"{key} should be NaN"
        else:
            assert result[key] == pytest.approx(ref, abs=tol[ref_key]), key


@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
@pytest.mark.parametrize("name", CASES)
def test_logistic_fits_match_reference(name, kind):
    case = load_case(name)
    ref, tol = case["expected"][kind], case["tolerance"]
    result, _ = evaluated(name)
    if ref["sse"] is None:  # constant prediction: undefined
        assert math.isnan(result[f"plcc_{kind}"]) and math.isnan(result[f"rmse_{kind}"])
        assert result[f"{kind}_params"] == [] and not result[f"{kind}_failed"]
        return
    assert not result[f"{kind}_failed"]
    y = np.asarray(case["mos"])
    sst = float(np.sum((y - y.mean()) ** 2))
    # A correct fit reaches an SSE at least as low as the reference's (README: 1e-4 relative).
    assert result[f"{kind}_sse"] <= ref["sse"] * (1 + 1e-4) + 1e-12 * sst
    assert result[f"plcc_{kind}"] == pytest.approx(ref["plcc"], abs=tol[f"{kind}_plcc"])
    assert result[f"rmse_{kind}"] == pytest.approx(ref["rmse"], abs=tol[f"{kind}_rmse"])
    # The reported params reproduce the reported numbers (independent numpy evaluation).
    fx = curve(kind, result[f"{kind}_params"])(np.asarray(case["pred"]))
    assert float(np.sum((fx - y) ** 2)) == pytest.approx(
        result[f"{kind}_sse"], rel=1e-6, abs=1e-12 * sst
    )
    rmse = math.sqrt(float(np.mean((fx - y) ** 2)))
    assert rmse == pytest.approx(result[f"rmse_{kind}"], rel=1e-6, abs=1e-9)
    # ...and the reference's own params give the reference SSE under our formula (same model).
    fref = curve(kind, ref["params"])(np.asarray(case["pred"]))
    assert float(np.sum((fref - y) ** 2)) == pytest.approx(ref["sse"], rel=1e-5, abs=1e-12 * sst)


def test_constant_prediction_warns_and_gives_nan():
    result, messages = evaluated("c12_n30_constant_pred")
    for key in ("srocc", "krocc", "plcc", "plcc_logistic4", "plcc_logistic5"):
        assert math.isnan(result[key])
    assert math.isfinite(result["rmse"])
    assert any("constant predictions" in m for m in messages)
    assert not any("ConstantInputWarning" in m for m in messages)


def test_dmos_direction_flips_raw_correlations_only():
    name = "c08_n500_dmos_negative"
    up, _ = evaluated(name, True)
    down, _ = evaluated(name, False)
    exp = load_case(name)["expected"]
    # DMOS targets: reported as correlation with quality, i.e. positive for this good predictor.
    assert down["srocc"] == pytest.approx(-exp["srocc"], abs=1e-9) and down["srocc"] > 0.98
    assert down["krocc"] == pytest.approx(-exp["krocc"], abs=1e-9)
    assert down["plcc"] == pytest.approx(-exp["plcc"], abs=1e-9)
    # Fitted PLCC is positive by construction and RMSE is unsigned: unchanged.
    for key in ("rmse", "plcc_logistic4", "rmse_logistic4", "plcc_logistic5", "rmse_logistic5"):
        assert down[key] == pytest.approx(up[key], rel=1e-9), key
    assert up["plcc_logistic4"] > 0.98
