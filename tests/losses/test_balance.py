"""Fixed-value ("communism") loss balancing: values pinned, zero/NaN terms left out."""

from __future__ import annotations

import math

import pytest
import torch

from percepta.losses.balance import FixedValueBalance, match_target


def test_each_term_is_pinned_to_its_target_and_gradient_is_target_over_value():
    w = torch.tensor(2.0, requires_grad=True)
    terms = {"loss_heatmap": w * 3.0, "loss_wh": w * 10.0, "num_objects": torch.tensor(7.0)}
    bal = FixedValueBalance({"heatmap": 1.5, "wh": 0.3})
    total = bal(terms)
    assert float(total.detach()) == pytest.approx(1.8)
    total.backward()
    # d/dw [1.5 * 3w / (3w)_detached + 0.3 * 10w / (10w)_detached] = 1.5/w + 0.3/w
    assert float(w.grad) == pytest.approx((1.5 + 0.3) / 2.0)
    assert bal.last_weights == pytest.approx({"loss_heatmap": 1.5 / 6.0, "loss_wh": 0.3 / 20.0})


def test_zero_and_nonfinite_terms_are_left_out_not_nan():
    w = torch.tensor(1.0, requires_grad=True)
    terms = {"loss_heatmap": w * 4.0, "loss_wh": w * 0.0, "loss_offset": w * float("nan")}
    total = FixedValueBalance({"heatmap": 1.5, "wh": 0.3, "offset": 0.1})(terms)
    assert float(total.detach()) == pytest.approx(1.5)
    total.backward()
    assert math.isfinite(float(w.grad))


def test_all_terms_nonfinite_gives_nan_so_the_trainer_skips_the_step():
    terms = {"loss_heatmap": torch.tensor(float("inf")), "loss_wh": torch.tensor(float("nan"))}
    assert math.isnan(float(FixedValueBalance({"heatmap": 1.0})(terms)))


def test_all_terms_zero_gives_a_zero_total():
    w = torch.tensor(1.0, requires_grad=True)
    total = FixedValueBalance({"wh": 0.3})({"loss_wh": w * 0.0})
    assert float(total.detach()) == 0.0
    total.backward()
    assert float(w.grad) == 0.0


def test_unmatched_terms_are_added_unscaled_or_pinned_to_the_default():
    terms = {"loss_heatmap": torch.tensor(3.0), "loss_extra": torch.tensor(5.0)}
    assert float(FixedValueBalance({"heatmap": 1.0})(terms)) == pytest.approx(6.0)
    assert float(FixedValueBalance({"heatmap": 1.0}, default_target=0.5)(terms)) == pytest.approx(
        1.5
    )


def test_matching_prefers_exact_key_then_longest_pattern():
    targets = {"heatmap": 1.5, "kd_heatmap": 1.2, "loss_kd_heatmap_b": 0.7, "wh": 0.3}
    assert match_target("loss_heatmap", targets) == 1.5
    assert match_target("loss_kd_heatmap_a", targets) == 1.2
    assert match_target("loss_kd_heatmap_b", targets) == 0.7
    assert match_target("loss_kd_wh_a", targets) == 0.3
    assert match_target("loss_offset", targets) is None


def test_targets_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        FixedValueBalance({"heatmap": 0.0})
