"""Image-quality evaluation: SROCC, KROCC, PLCC and RMSE, raw and after logistic mapping.

Definitions (the IQA community's, checked against scipy 1.17 reference vectors):

- **SROCC**: Spearman rank correlation, ties get their average rank (``scipy.stats.spearmanr``).
- **KROCC**: Kendall tau-b, corrected for ties in both variables (``scipy.stats.kendalltau``,
  ``variant="b"``; also what MATLAB ``corr(..., 'Kendall')`` returns).
- **PLCC**: Pearson correlation (``scipy.stats.pearsonr``) of the raw predictions with the MOS.
- **RMSE**: ``sqrt(mean((x - y)^2))`` of the raw predictions -- only meaningful when they are
  already on the MOS scale.
- ``plcc_logistic4`` / ``rmse_logistic4`` and ``plcc_logistic5`` / ``rmse_logistic5``: the same
  after mapping the predictions with the fitted VQEG 4-parameter or Sheikh et al. 5-parameter
  logistic (see :mod:`percepta.quality.logistic`), fitted on the evaluated set itself.

Conventions (state them when reporting numbers):

- ``fit=None`` (default) computes **both** logistic fits, so every key above is always present
  (the CLI and logs want a fixed key set); ``fit="logistic4"`` or ``"logistic5"`` computes only that
  one (the other's keys are absent); ``fit="raw"`` skips fitting (no logistic keys; the cheapest,
  e.g. for frequent validation during training). pyiqa reports raw PLCC only.
- ``higher_is_better=False`` declares that the **targets** are DMOS-like (lower = better, LIVE and
  CSIQ). SROCC, KROCC and raw PLCC are then reported with their sign flipped, i.e. as correlations
  with *quality*, so a good higher-is-better predictor scores positive (equivalently: use it for a
  lower-is-better predictor such as LPIPS against a MOS). Unlike taking ``|r|`` this keeps a wrong
  direction visible as a negative value. The logistic fits map the predictions onto the targets as
  given; their PLCC is non-negative by construction and is not flipped; RMSE is never flipped.
- Constant predictions or targets (or fewer than 2 images) make the correlations undefined: they
  are NaN and a warning says why; the fits are NaN too (``logistic*_params`` empty). Raw RMSE is
  still a number.
- If every starting point of a fit fails, ``plcc_logistic*``/``rmse_logistic*`` fall back to the
  raw PLCC/RMSE, ``logistic*_failed`` is True and a warning is issued.

:class:`QualityEvaluator` follows the evaluator protocol (:class:`percepta.evaluator.Evaluator`,
a :class:`torchmetrics.Metric`), so it accumulates over batches and syncs under DDP (states are
concatenated, ``dist_reduce_fx="cat"``). Its primary metric, which keeps ``best.pt``, is
``srocc`` (higher is better): the ranking agreement every IQA paper reports first, and the one
that needs no fit, so it is defined and cheap at every validation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torchmetrics.utilities import dim_zero_cat

from percepta.errors import DataError, PerceptaError
from percepta.evaluator import Evaluator
from percepta.jsonable import to_jsonable
from percepta.quality.logistic import FIT_KINDS, FitResult, curve, fit_logistic
from percepta.registry import EVALUATORS

__all__ = [
    "QualityEvaluator",
    "QualityEvaluatorOptions",
    "QualityMetricWarning",
    "build_quality_evaluator",
    "correlations",
    "quality_metrics",
    "format_table",
    "cli_score",
    "METRIC_KEYS",
]

FIT_CHOICES = (None, "logistic4", "logistic5", "raw")
METRIC_KEYS = (
    "srocc",
    "krocc",
    "plcc",
    "rmse",
    "plcc_logistic4",
    "rmse_logistic4",
    "plcc_logistic5",
    "rmse_logistic5",
)


class QualityMetricWarning(UserWarning):
    """NaN metrics (constant or too few inputs) or a logistic fit that could not be computed."""


def _fits_for(fit: str | None) -> tuple[str, ...]:
    if fit not in FIT_CHOICES:
        from percepta.config import ConfigError

        raise ConfigError(
            f"evaluator 'quality': fit must be one of null (both fits), 'logistic4', "
            f"'logistic5' or 'raw', got {fit!r}"
        )
    if fit is None:
        return FIT_KINDS
    return () if fit == "raw" else (fit,)


def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """SROCC (average ranks), KROCC (tau-b), PLCC and RMSE of raw ``x`` against ``y``.

    NaN (with a :class:`QualityMetricWarning`) for correlations that are undefined: fewer than two
    points or a constant input. No direction flip here (see :func:`quality_metrics`).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    n = x.size
    out = {
        "srocc": math.nan,
        "krocc": math.nan,
        "plcc": math.nan,
        "rmse": math.sqrt(float(np.mean((x - y) ** 2))) if n else math.nan,
    }
    if n < 2:
        warnings.warn(
            f"correlations need at least 2 images, got {n}: SROCC/KROCC/PLCC (and "
            "any logistic fit) are NaN",
            QualityMetricWarning,
            stacklevel=3,
        )
        return out
    const = [name for name, v in (("predictions", x), ("targets", y)) if np.all(v == v[0])]
    if const:
        warnings.warn(
            f"constant {' and '.join(const)} over {n} images: SROCC/KROCC/PLCC (and "
            "any logistic fit) are undefined (NaN)",
            QualityMetricWarning,
            stacklevel=3,
        )
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        out["srocc"] = float(stats.spearmanr(x, y).statistic)
        out["krocc"] = float(stats.kendalltau(x, y, variant="b").statistic)
        out["plcc"] = float(stats.pearsonr(x, y).statistic)
    return out


def quality_metrics(
    preds: Sequence[float] | np.ndarray | torch.Tensor,
    targets: Sequence[float] | np.ndarray | torch.Tensor,
    fit: str | None = None,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """All quality metrics of ``preds`` against ``targets`` in one call (what ``compute`` returns).

    Args:
        preds: predicted scores, ``[n]``.
        targets: MOS (or DMOS with ``higher_is_better=False``), ``[n]``.
        fit: ``None`` (both logistic fits), ``"logistic4"``, ``"logistic5"`` or ``"raw"`` (none).
        higher_is_better: False when the targets are DMOS-like (lower = better); flips the sign
            of SROCC, KROCC and raw PLCC (see the module docstring).

    Returns:
        ``n``, ``srocc``, ``krocc``, ``plcc``, ``rmse`` and, per computed fit ``k``:
        ``plcc_<k>``, ``rmse_<k>``, ``<k>_params`` (``b1..``, original units; empty if NaN),
        ``<k>_sse`` and ``<k>_failed`` (True when every start failed and the raw values are
        reported instead).
    """
    kinds = _fits_for(fit)
    x = _as_array(preds)
    y = _as_array(targets)
    if x.shape != y.shape:
        raise DataError(f"predictions and targets differ in length: {x.size} vs {y.size}")
    for what, v in (("prediction", x), ("target", y)):
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise DataError(
                f"non-finite {what} score at position(s) {', '.join(map(str, bad[:10]))}"
            )
    result: dict[str, Any] = {"n": int(x.size)}
    raw = correlations(x, y)
    sign = 1.0 if higher_is_better else -1.0
    for key in ("srocc", "krocc", "plcc"):
        result[key] = sign * raw[key] if not math.isnan(raw[key]) else math.nan
    result["rmse"] = raw["rmse"]
    for kind in kinds:
        res = fit_logistic(x, y, kind) if x.size else FitResult(kind, False, message="no images")
        failed = False
        if res.ok:
            plcc, rmse = res.plcc, res.rmse
        elif res.n_starts and res.n_failed == res.n_starts:
            failed = True
            plcc, rmse = result["plcc"], result["rmse"]
            warnings.warn(
                f"{kind} fit: {res.message}; reporting the raw PLCC/RMSE instead "
                f"({kind}_failed=True)",
                QualityMetricWarning,
                stacklevel=2,
            )
        else:
            plcc = rmse = math.nan
            if not math.isnan(raw["plcc"]):  # otherwise correlations() has already warned
                warnings.warn(
                    f"{kind} fit not possible: {res.message}; its PLCC/RMSE are NaN",
                    QualityMetricWarning,
                    stacklevel=2,
                )
        result[f"plcc_{kind}"] = plcc
        result[f"rmse_{kind}"] = rmse
        result[f"{kind}_params"] = list(res.params)
        result[f"{kind}_sse"] = res.sse
        result[f"{kind}_failed"] = failed
    return result


def _as_array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy().ravel()
    return np.asarray(values, dtype=np.float64).ravel()


def _to_float64(value: Any, what: str) -> torch.Tensor:
    """Tensor, array, number or sequence -> float64 ``[n]`` CPU tensor (Python floats stay exact)."""
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", torch.float64).reshape(-1)
        return torch.from_numpy(np.asarray(value, dtype=np.float64).reshape(-1).copy())
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(
            f"{what}: expected numbers, a tensor or dicts with key 'score' ({e})"
        ) from None


def _scores(batch: Any, what: str) -> torch.Tensor:
    """Flatten one ``update`` argument to a float64 ``[n]`` tensor on the CPU.

    Accepts a tensor/array/sequence of numbers, a dict with key ``score``, or a list of such
    dicts (percepta's prediction and target dicts).
    """
    if isinstance(batch, Mapping):
        batch = [batch]
    if isinstance(batch, (list, tuple)) and batch and all(isinstance(b, Mapping) for b in batch):
        parts = []
        for i, item in enumerate(batch):
            if "score" not in item:
                raise DataError(
                    f"{what} {i}: dict has no key 'score' (keys: {', '.join(map(str, item))})"
                )
            parts.append(_to_float64(item["score"], f"{what} {i}"))
        t = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    else:
        if isinstance(batch, (list, tuple)) and any(isinstance(b, Mapping) for b in batch):
            raise DataError(f"{what}: mix of dicts and numbers in one batch")
        t = _to_float64(batch, what)
    bad = torch.nonzero(~torch.isfinite(t)).reshape(-1)
    if bad.numel():
        idx = ", ".join(str(int(i)) for i in bad[:10])
        raise DataError(f"{what}: non-finite score at batch position(s) {idx}")
    return t


def _cat_state(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A list state (one process) or the tensor torchmetrics leaves after a "cat" sync (DDP)."""
    if isinstance(state, torch.Tensor):
        return state.reshape(-1)
    return dim_zero_cat(state).reshape(-1) if state else torch.zeros(0, dtype=torch.float64)


class QualityEvaluator(Evaluator):
    """SROCC / KROCC / PLCC / RMSE, raw and after logistic fitting, as a torchmetrics Metric.

    Example::

        ev = QualityEvaluator()                  # both logistic fits
        ev.update(model_outputs, targets)        # lists of dicts with key "score", or tensors
        print(ev.format_table(ev.compute()))

    Args:
        fit: ``None`` (both fits), ``"logistic4"``, ``"logistic5"`` or ``"raw"`` (no fit).
        higher_is_better: direction of the **targets**; False for DMOS (sign convention in the
            module docstring). Stored as ``targets_higher_is_better`` because torchmetrics'
            ``Metric.higher_is_better`` describes the metric itself (higher SROCC is better).
        **kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    primary_metric = "srocc"

    def __init__(
        self, fit: str | None = None, higher_is_better: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.fit = fit
        self.fit_kinds = _fits_for(fit)
        self.targets_higher_is_better = bool(higher_is_better)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("mos", default=[], dist_reduce_fx="cat")

    def update(self, preds: Any, targets: Any) -> None:  # type: ignore[override]
        """Add a batch: tensors/sequences of scores, or lists of dicts with key ``score``."""
        p = _scores(preds, "predictions")
        t = _scores(targets, "targets")
        if p.numel() != t.numel():
            raise DataError(
                f"update: {p.numel()} predictions but {t.numel()} targets in this batch"
            )
        self.preds.append(p)
        self.mos.append(t)

    def compute(self) -> dict[str, Any]:
        """The metrics dict of :func:`quality_metrics` over everything seen (all processes)."""
        x, y = _cat_state(self.preds), _cat_state(self.mos)
        return quality_metrics(x, y, fit=self.fit, higher_is_better=self.targets_higher_is_better)

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """``(predictions, targets)`` seen so far, float64, in update order (what ``compute``
        scores; e.g. for a scatter plot without scoring the images twice)."""
        x, y = _cat_state(self.preds), _cat_state(self.mos)
        return x.double().cpu().numpy(), y.double().cpu().numpy()

    def format_table(self, metrics: Mapping[str, Any]) -> str:
        """A ``compute()`` result as a readable table (raw and fitted columns)."""
        return format_table(metrics, higher_is_better=self.targets_higher_is_better)


@dataclass
class QualityEvaluatorOptions:
    """``evaluator`` section for image quality: correlation metrics + logistic fits."""

    name: str = "quality"
    fit: str | None = None  # null = both logistic fits | logistic4 | logistic5 | raw
    higher_is_better: bool = True  # false when the targets are DMOS (lower = better)


@EVALUATORS.register(
    "quality",
    options=QualityEvaluatorOptions,
    help="SROCC, KROCC, PLCC, RMSE (raw and after 4/5-parameter logistic fits)",
)
def build_quality_evaluator(
    options: QualityEvaluatorOptions | None, dataset: Any = None
) -> QualityEvaluator:
    """Build a :class:`QualityEvaluator` from its options (``None``: the defaults).

    ``dataset`` is accepted for the shared builder signature and not read: quality targets
    already have the dataset's direction applied (``score``: higher = better), so the options'
    ``higher_is_better`` is only for score files or datasets that keep DMOS as given.
    """
    opts = options if options is not None else QualityEvaluatorOptions()
    if not isinstance(opts, QualityEvaluatorOptions):
        raise TypeError(f"expected QualityEvaluatorOptions or None, got {type(opts).__name__}")
    return QualityEvaluator(fit=opts.fit, higher_is_better=opts.higher_is_better)


def _fmt(v: Any) -> str:
    return "NaN" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"


def format_table(result: Mapping[str, Any], higher_is_better: bool = True) -> str:
    """A readable table of a :func:`quality_metrics` result (raw and fitted columns)."""
    kinds = [k for k in FIT_KINDS if f"plcc_{k}" in result]
    heads = ["raw"] + [{"logistic4": "logistic4", "logistic5": "logistic5"}[k] for k in kinds]
    direction = "higher" if higher_is_better else "lower (DMOS)"
    lines = [
        f"image quality: {result['n']} images; targets: {direction} is better",
        f"{'metric':<8}" + "".join(f"{h:>12}" for h in heads),
    ]
    for key, label in (("srocc", "SROCC"), ("krocc", "KROCC"), ("plcc", "PLCC"), ("rmse", "RMSE")):
        row = [_fmt(result[key])]
        for k in kinds:
            row.append(_fmt(result[f"{key}_{k}"]) if key in ("plcc", "rmse") else "-")
        lines.append(f"{label:<8}" + "".join(f"{c:>12}" for c in row))
    for k in kinds:
        if result.get(f"{k}_failed"):
            lines.append(f"note: the {k} fit failed; its column repeats the raw values")
    return "\n".join(lines)


def cli_score(args: argparse.Namespace) -> int:
    """``percepta score quality --pred FILE --mos FILE [--lower-is-better] [--json] [--plot PNG]``.

    Input files (CSV with a header, or JSON; image ids are matched exactly):

    - ``--pred``: CSV columns ``image,score`` (any order, extra columns ignored), or JSON
      ``{"<image>": score, ...}`` or ``[{"image": ..., "score": ...}, ...]``.
    - ``--mos``: CSV columns ``image,mos`` and optionally ``mos_std`` (e.g. LIVE-Challenge's
      ``scores.csv``: ``image,mos,mos_std``), or JSON ``{"<image>": mos, ...}`` or
      ``[{"image": ..., "mos": ...}, ...]``.
    - ``--lower-is-better``: the human scores are DMOS; SROCC/KROCC/PLCC are reported as
      correlations with quality (sign flipped).

    Output: a table, or with ``--json`` one JSON object with ``n``, ``srocc``, ``krocc``, ``plcc``,
    ``rmse``, ``plcc_logistic4``, ``rmse_logistic4``, ``plcc_logistic5``, ``rmse_logistic5``, the
    fitted parameters ``logistic4_params`` / ``logistic5_params`` and the ``logistic*_failed`` flags;
    undefined values (NaN) are written as ``null``. ``--plot`` writes a scatter plot of the
    predictions against the human scores with both fitted curves.
    """
    from percepta.quality.score_io import align_scores, read_scores

    pred = read_scores(args.pred, "pred")
    mos = read_scores(args.mos, "mos")
    ids, x, y = align_scores(pred, mos)
    higher = not getattr(args, "lower_is_better", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QualityMetricWarning)
        result = quality_metrics(x, y, fit=None, higher_is_better=higher)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if getattr(args, "plot", None):
        from percepta.viz.scatter import scatter_with_fit

        curves = {
            f"{k[-1]}-parameter logistic": curve(k, result[f"{k}_params"])
            for k in FIT_KINDS
            if result[f"{k}_params"] and not result[f"{k}_failed"]
        }
        try:
            scatter_with_fit(
                x,
                y,
                args.plot,
                curves,
                title="predicted quality vs. human scores",
                ylabel="MOS" if higher else "DMOS",
                text=f"SROCC {_fmt(result['srocc'])}   PLCC(l4) {_fmt(result['plcc_logistic4'])}",
            )
        except OSError as e:
            raise PerceptaError(f"cannot write plot {args.plot}: {e.strerror or e}") from None
    if getattr(args, "json", False):
        keys = [
            "n",
            *METRIC_KEYS,
            "logistic4_params",
            "logistic5_params",
            "logistic4_failed",
            "logistic5_failed",
        ]
        print(json.dumps({k: to_jsonable(result[k]) for k in keys}))
    else:
        print(format_table(result, higher_is_better=higher))
        if getattr(args, "plot", None):
            print(f"plot written to {args.plot}")
    return 0
