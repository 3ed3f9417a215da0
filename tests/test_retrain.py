"""Retraining, the ground truth influence is checked against (retrain.py): Newton polish to
round-off, and the fixed-step gradient-descent protocol used for networks."""

import pytest
import torch

import influencekit as ik
from helpers import logistic_digits, worst_test_point
from influencekit.retrain import weighted_risk


def test_newton_steps_reach_round_off_from_a_nearby_start():
    obj, _, _ = logistic_digits()
    start = obj.theta + 1e-2 * torch.randn(obj.p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert weighted_risk(obj, start)[1].abs().max() > 1e-4
    theta = ik.newton(obj, start, steps=4)
    assert weighted_risk(obj, theta)[1].abs().max() < 1e-13
    assert (theta - obj.theta).abs().max() < 1e-6  # the same minimum (obj.theta is L-BFGS + Newton)


def test_descend_takes_plain_gradient_steps_of_size_one_over_lambda_max():
    obj, _, _ = logistic_digits()
    w = torch.ones(obj.n, dtype=torch.float64)
    w[0] = 0.0
    lr = 1.0 / ik.spectrum(obj).max_eigenvalue
    manual = obj.theta.clone()
    for _ in range(3):
        manual = manual - lr * weighted_risk(obj, manual, w)[1]
    assert torch.allclose(ik.descend(obj, w, steps=3), manual, rtol=0, atol=1e-12)


def test_leave_one_out_by_gradient_steps_approaches_the_optimum_from_below():
    obj, _, test = logistic_digits(l2=1.0, n_train=100)  # condition number ~4: 200 steps converge
    t = worst_test_point(obj, test)
    remove = [int(i) for i in ik.Influence(obj.to_model(), "logistic", obj.train, l2=obj.l2,
                                           solver="exact").loo(t)[0].abs().argsort(descending=True)[:3]]
    converged = ik.loo_retrain(obj, remove, t, newton_steps=1)[0]
    many = ik.loo_retrain(obj, remove, t, steps=200)[0]
    few = ik.loo_retrain(obj, remove, t, steps=2)[0]
    assert torch.allclose(many, converged, rtol=1e-6, atol=0)
    # truncation shrinks every change without flipping it: damping-like, as descend's docstring says
    assert (torch.sign(few) == torch.sign(converged)).all()
    assert (few.abs() < converged.abs()).all()


def test_descend_needs_at_least_one_step():
    obj, _, _ = logistic_digits()
    with pytest.raises(ik.InputError, match="steps"):
        ik.descend(obj, steps=0)


def test_damped_influence_of_a_network_tracks_gradient_step_leave_one_out_with_the_matching_step_count():
    """The mnist-cnn protocol on a small tanh MLP: N = ln 2 lambda_max / d steps for damping d."""
    import math

    from scipy.stats import pearsonr

    from helpers import digits_mlp

    obj, test = digits_mlp()
    obj = ik.Objective(obj.to_model(ik.newton(obj, steps=3)), "cross_entropy", obj.train, l2=obj.l2, batch_size=300)
    assert weighted_risk(obj, obj.theta)[1].abs().max() < 1e-12
    d = 1e-3
    steps = round(math.log(2) * ik.spectrum(obj).max_eigenvalue / d)
    t = worst_test_point(obj, test)
    pred = ik.Influence(obj.to_model(), "cross_entropy", obj.train, l2=obj.l2, solver="exact", damping=d).loo(t)[0]
    top = pred.abs().argsort(descending=True)[:10].tolist()
    actual = ik.loo_retrain(obj, top, t, steps=steps)[0]
    assert pearsonr(pred[top].numpy(), actual.numpy()).statistic > 0.9
    assert (torch.sign(pred[top]) == torch.sign(actual)).all()
