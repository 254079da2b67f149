"""centerX KD loss formulas on small hand-checkable tensors (notes/detection.md §2.3)."""

from __future__ import annotations

import pytest
import torch

from percepta.losses.distill import kd_heatmap_loss, kd_regression_loss, peak_weight_map


def _heat() -> torch.Tensor:
    h = torch.zeros(1, 2, 3, 3)
    h[0, 0] = torch.tensor([[0.1, 0.2, 0.1], [0.2, 0.9, 0.2], [0.1, 0.2, 0.1]])
    h[0, 1, 0, 0] = 0.5  # a lone peak in the corner of the second class
    h[0, 1, 2, 2] = 0.95  # and one that beats class 0's value there
    return h


def test_peak_map_keeps_local_maxima_and_takes_max_over_classes():
    m = peak_weight_map(_heat())
    expected = torch.zeros(1, 1, 3, 3)
    expected[0, 0, 1, 1] = 0.9  # class 0's centre (its neighbours are not maxima)
    expected[0, 0, 0, 0] = 0.5  # class 1's corner peak (class 0's 0.1 there is no peak)
    expected[0, 0, 2, 2] = 0.95  # max over classes: class 1's peak 0.95 beats class 0's non-peak
    assert torch.equal(m, expected)


def test_peak_map_counts_plateau_ties_as_peaks():
    h = torch.zeros(1, 1, 1, 4)
    h[0, 0, 0, 1:3] = 0.7
    assert peak_weight_map(h)[0, 0, 0].tolist() == pytest.approx([0.0, 0.7, 0.7, 0.0])


def test_heatmap_mse_is_the_mean_over_all_elements():
    s = torch.tensor([[[[0.5, 0.0], [0.0, 0.1]]]])
    t = torch.tensor([[[[0.3, 0.0], [0.0, 0.5]]]])
    assert float(kd_heatmap_loss(s, t)) == pytest.approx((0.2**2 + 0.4**2) / 4)
    with pytest.raises(ValueError, match="differ"):
        kd_heatmap_loss(s, t[..., :1])


def test_regression_loss_is_peak_weighted_and_normalised_by_the_weight_sum():
    m = torch.zeros(1, 1, 2, 2)
    m[0, 0, 0, 0], m[0, 0, 1, 1] = 0.8, 0.2
    t = torch.zeros(1, 2, 2, 2)
    t[0, :, 0, 0] = torch.tensor([10.0, 4.0])
    t[0, :, 1, 1] = torch.tensor([2.0, 2.0])
    s = t.clone()
    s[0, :, 0, 0] = torch.tensor([12.0, 3.0])  # |diff| 2 + 1 at weight 0.8
    s[0, :, 1, 1] = torch.tensor([2.0, 6.0])  # |diff| 0 + 4 at weight 0.2
    s[0, :, 0, 1] = 100.0  # weight 0: ignored
    plain = 0.8 * 3 + 0.2 * 4
    assert float(kd_regression_loss(s, t, m)) == pytest.approx(plain / (1.0 + 1e-4))
    # norm_wh: divide by the teacher's mean side at each pixel: 7 at (0,0), 2 at (1,1)
    rel = 0.8 * 3 / (7 + 1e-4) + 0.2 * 4 / (2 + 1e-4)
    assert float(kd_regression_loss(s, t, m, norm_wh=True)) == pytest.approx(rel / (1.0 + 1e-4))


def test_regression_loss_without_teacher_peaks_is_zero_not_nan():
    s, t = torch.rand(2, 2, 4, 4), torch.rand(2, 2, 4, 4)
    loss = kd_regression_loss(s, t, torch.zeros(2, 1, 4, 4))
    assert float(loss) == 0.0


def test_regression_gradient_flows_to_the_student_only_at_weighted_pixels():
    s = torch.zeros(1, 2, 2, 2, requires_grad=True)
    t = torch.ones(1, 2, 2, 2)
    m = torch.zeros(1, 1, 2, 2)
    m[0, 0, 1, 0] = 1.0
    kd_regression_loss(s, t, m).backward()
    g = s.grad[0]
    assert torch.count_nonzero(g) == 2 and g[:, 1, 0].tolist() == pytest.approx([-1 / 1.0001] * 2)
