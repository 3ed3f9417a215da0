"""Per-example losses: values, the smooth hinge's limit, and name lookup."""

import pytest
import torch

import influencekit as ik
from influencekit.losses import get_loss, hinge, logistic


def test_smooth_hinge_tends_to_the_hinge_as_t_goes_to_zero():
    s = torch.linspace(-2, 3, 101, dtype=torch.float64)
    y = torch.ones_like(s)
    gaps = [(ik.SmoothHinge(t)(s, y) - hinge(s, y)).abs().max().item() for t in (0.1, 0.01, 0.001)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] <= 0.001 * torch.log(torch.tensor(2.0)).item() + 1e-12
    torch.testing.assert_close(ik.SmoothHinge(0.0)(s, y), hinge(s, y))


def test_smooth_hinge_value_matches_its_formula_and_labels_in_both_codings():
    s, t = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64), 0.1
    expected = t * torch.log1p(torch.exp((1 - s) / t))
    torch.testing.assert_close(ik.SmoothHinge(t)(s, torch.ones(3)), expected)
    torch.testing.assert_close(ik.SmoothHinge(t)(-s, torch.zeros(3)), expected)  # y = 0 means -1
    torch.testing.assert_close(ik.SmoothHinge(t)(-s, -torch.ones(3)), expected)


def test_logistic_is_the_binary_log_loss():
    f = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    p = torch.sigmoid(f)
    expected = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    torch.testing.assert_close(logistic(f, y), expected)


def test_losses_by_name_and_bad_names():
    assert get_loss("logistic") is logistic
    with pytest.raises(ik.InputError, match="unknown loss"):
        get_loss("focal")
    with pytest.raises(ik.InputError, match="t must be >= 0"):
        ik.SmoothHinge(-1.0)
