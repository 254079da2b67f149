"""QualityEvaluator as a torchmetrics Metric: inputs, options, edge cases, registry."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from percepta.errors import DataError, PerceptaError
from percepta.quality import logistic as logistic_mod
from percepta.quality.evaluation import (
    METRIC_KEYS,
    QualityEvaluator,
    QualityEvaluatorOptions,
    QualityMetricWarning,
    build_quality_evaluator,
    format_table,
    quality_metrics,
)
from percepta.registry import EVALUATORS

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 1, 40)
Y = 1 + 4 / (1 + np.exp(-(X - 0.5) / 0.15)) + RNG.normal(0, 0.3, 40)


def test_batches_and_input_types_are_equivalent():
    whole = QualityEvaluator(fit="raw")
    whole.update(torch.tensor(X), torch.tensor(Y))
    parts = QualityEvaluator(fit="raw")
    parts.update(
        [{"score": torch.tensor(v, dtype=torch.float64)} for v in X[:10]],
        [{"score": float(v)} for v in Y[:10]],
    )
    parts.update(
        {"score": torch.tensor(X[10:25])}, {"score": torch.tensor(Y[10:25])}
    )  # one dict, [B] scores
    parts.update(list(X[25:]), tuple(Y[25:]))
    a, b = whole.compute(), parts.compute()
    assert a["n"] == b["n"] == 40
    for k in ("srocc", "krocc", "plcc", "rmse"):
        assert a[k] == pytest.approx(b[k], abs=1e-12)


def test_float32_tensors_are_accepted():
    ev = QualityEvaluator(fit="raw")
    ev.update(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32))
    assert ev.compute()["srocc"] == pytest.approx(
        quality_metrics(X, Y, fit="raw")["srocc"], abs=1e-6
    )


@pytest.mark.parametrize(
    "fit,present,absent",
    [
        (None, ["plcc_logistic4", "rmse_logistic5", "logistic4_params", "logistic5_params"], []),
        ("logistic4", ["plcc_logistic4", "rmse_logistic4"], ["plcc_logistic5"]),
        ("logistic5", ["plcc_logistic5", "rmse_logistic5"], ["plcc_logistic4"]),
        ("raw", ["srocc", "krocc", "plcc", "rmse"], ["plcc_logistic4", "plcc_logistic5"]),
    ],
)
def test_fit_option_selects_keys(fit, present, absent):
    out = quality_metrics(X, Y, fit=fit)
    for k in present:
        assert k in out
    for k in absent:
        assert k not in out
    if fit is None:
        assert set(METRIC_KEYS) <= set(out)
        assert len(out["logistic4_params"]) == 4 and len(out["logistic5_params"]) == 5


def test_invalid_fit_is_a_user_error():
    with pytest.raises(PerceptaError, match="logistic3"):
        QualityEvaluator(fit="logistic3")


def test_update_rejects_bad_batches():
    ev = QualityEvaluator()
    with pytest.raises(DataError, match="3 predictions but 2 targets"):
        ev.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(DataError, match="position.*1"):
        ev.update(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]))
    with pytest.raises(DataError, match="targets 1: dict has no key 'score'"):
        ev.update([{"score": 1.0}, {"score": 2.0}], [{"score": 1.0}, {"mos": 2.0}])
    with pytest.raises(DataError, match="expected numbers"):
        ev.update(["a", "b"], [1.0, 2.0])
    with pytest.warns(UserWarning):  # torchmetrics: compute() before any successful update()
        assert ev.compute()["n"] == 0  # nothing was added by the rejected batches


def test_reset_and_merge_state_concatenate():
    a, b = QualityEvaluator(fit="raw"), QualityEvaluator(fit="raw")
    a.update(X[:20], Y[:20])
    b.update(X[20:], Y[20:])
    a.merge_state(b)  # what DDP's "cat" reduction does across processes
    assert a.compute()["srocc"] == pytest.approx(
        quality_metrics(X, Y, fit="raw")["srocc"], abs=1e-12
    )
    a.reset()
    a.update(X[:5], Y[:5])
    assert a.compute()["n"] == 5


def test_too_few_images_gives_nan_with_warning():
    with pytest.warns(QualityMetricWarning, match="at least 2"):
        out = quality_metrics([0.5], [3.0])
    assert math.isnan(out["srocc"]) and math.isnan(out["plcc_logistic4"])
    with pytest.warns(QualityMetricWarning, match="needs at least 5 points"):
        out = quality_metrics([0.1, 0.2, 0.3, 0.5], [1.0, 2.0, 2.5, 4.0], fit="logistic5")
    assert math.isnan(out["plcc_logistic5"]) and not out["logistic5_failed"]


def test_constant_targets_give_nan():
    with pytest.warns(QualityMetricWarning, match="constant targets"):
        out = quality_metrics(X, np.full_like(X, 3.0))
    assert math.isnan(out["krocc"]) and math.isnan(out["plcc_logistic5"])


def test_all_starts_failing_reports_raw_values_with_flag(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("simulated optimiser failure")

    monkeypatch.setattr(logistic_mod, "leastsq", broken)
    with pytest.warns(QualityMetricWarning, match="logistic4 fit: all .* local searches .* failed"):
        out = quality_metrics(X, Y, fit="logistic4")
    assert out["logistic4_failed"] is True
    assert out["plcc_logistic4"] == out["plcc"] and out["rmse_logistic4"] == out["rmse"]
    assert out["logistic4_params"] == []
    assert "logistic4 fit failed" in format_table(out)


def test_one_failing_start_is_tolerated(monkeypatch):
    real = logistic_mod.leastsq
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("simulated")
        return real(*args, **kwargs)

    monkeypatch.setattr(logistic_mod, "leastsq", flaky)
    res = logistic_mod.fit_logistic(X, Y, "logistic4")
    assert res.ok and res.n_failed == 1 and res.n_starts > 1


def test_table_lists_every_metric():
    table = format_table(quality_metrics(X, Y), higher_is_better=False)
    for word in ("SROCC", "KROCC", "PLCC", "RMSE", "logistic4", "logistic5", "40 images", "DMOS"):
        assert word in table
    ev = QualityEvaluator(higher_is_better=False)  # the method uses the evaluator's direction
    assert ev.format_table(quality_metrics(X, Y)) == table
    assert not hasattr(ev, "summary")  # one format_table, no aliases


def test_registered_with_options():
    entry = EVALUATORS.entry("quality")
    assert entry.options is QualityEvaluatorOptions
    first = dataclasses.fields(QualityEvaluatorOptions)[0]
    assert first.name == "name" and first.default == "quality"
    opts = QualityEvaluatorOptions(fit="logistic4", higher_is_better=False)
    ev = EVALUATORS.build("quality", opts, None)
    assert isinstance(ev, QualityEvaluator)
    assert ev.fit_kinds == ("logistic4",) and ev.targets_higher_is_better is False
    ev2 = build_quality_evaluator(QualityEvaluatorOptions(fit="raw"), object())  # dataset unused
    assert ev2.fit_kinds == ()
    assert build_quality_evaluator(None, None).fit_kinds == ("logistic4", "logistic5")
    with pytest.raises(TypeError, match="QualityEvaluatorOptions"):
        build_quality_evaluator({"fit": "raw"}, None)  # options are one dataclass type
    assert (ev.primary_metric, ev.higher_is_better) == ("srocc", True)
    assert (
        QualityEvaluator.higher_is_better is True
    )  # torchmetrics' meaning: higher SROCC is better


@dataclasses.dataclass
class _ToyModelOptions:
    name: str = "quality_eval_toy_model"


def test_config_section_validates():
    from percepta import config as C
    from percepta.registry import MODELS

    if "quality_eval_toy_model" not in MODELS:
        MODELS.add(
            "quality_eval_toy_model", lambda cfg: cfg, options=_ToyModelOptions, help="test model"
        )
    base = ["model.name=quality_eval_toy_model", "evaluator.name=quality"]
    cfg = C.load(None, [*base, "evaluator.fit=logistic5", "evaluator.higher_is_better=false"])
    opts = C.section_object(cfg.evaluator)
    assert opts == QualityEvaluatorOptions(fit="logistic5", higher_is_better=False)
    from percepta.engine.build import build_evaluator

    ev = build_evaluator(cfg, dataset=object())  # the engine's call: builder(options, dataset)
    assert isinstance(ev, QualityEvaluator) and ev.fit_kinds == ("logistic5",)
    assert ev.targets_higher_is_better is False
    with pytest.raises(PerceptaError, match="fitt"):
        C.load(None, [*base, "evaluator.fitt=raw"])


def test_no_scipy_constant_warning_leaks():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quality_metrics(np.full(10, 0.5), np.arange(10.0))
    kinds = {type(w.message).__name__ for w in caught}
    assert kinds == {"QualityMetricWarning"}


def test_scores_returns_what_was_seen_in_update_order():
    ev = QualityEvaluator()
    ev.update([{"score": 3.5}, {"score": 1.25}], torch.tensor([4.0, 2.0]))
    ev.update(torch.tensor([2.5]), [{"score": 3.0}])
    preds, targets = ev.scores()
    assert preds.dtype == np.float64 and targets.dtype == np.float64
    np.testing.assert_allclose(preds, [3.5, 1.25, 2.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(targets, [4.0, 2.0, 3.0], rtol=0, atol=1e-12)
