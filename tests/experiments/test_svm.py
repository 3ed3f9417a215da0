"""The exact hinge SVM: its solve meets the KKT conditions, and leave-one-out warm starts change nothing."""

import numpy as np
import torch

import influencekit as ik
from influencekit.experiments import datasets, problems
from influencekit.experiments.svm import ExactSVM, hinge_svm


def test_svm_problem_is_the_exact_minimiser_of_the_hinge_objective():
    p = problems.make("digits-svm", t=0.0)
    obj = ik.Objective(p.model, "hinge", p.train, l2=p.l2)
    theta = obj.theta.clone()
    risk = lambda th: obj.risk(th)[0].item()  # noqa: E731
    base = risk(theta)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # no small random move lowers the (convex) objective
        assert risk(theta + 1e-4 * torch.randn(obj.p, generator=g, dtype=torch.float64)) >= base - 1e-12
    # removing a point that is not a support vector changes nothing
    X, y = p.train
    margins = (2 * y - 1) * p.model(X).detach()
    far = int(torch.nonzero(margins > 1.5)[0])
    assert p.retrain([far], p.test)[0].abs().max() < 1e-8


def test_hinge_svm_meets_the_kkt_conditions_where_a_plain_dual_solve_stalls():
    """digits 1 vs 7 at l2 = 0.01: L-BFGS-B on the dual alone stopped at a 5 % duality gap."""
    Xtr, ytr, _, _ = datasets.digits((1, 7), seed=0)
    X, y, n, l2 = Xtr.double().numpy(), 2.0 * ytr.double().numpy() - 1.0, len(Xtr), 1e-2
    Z = y[:, None] * np.c_[X, np.ones(n)]
    theta = hinge_svm(Z, l2)
    m = Z @ theta
    # stationarity: l2 theta = (1/n) sum beta_i z_i, beta = 1 below the margin, 0 above, in [0, 1] on it
    on = np.abs(m - 1) < 1e-9
    rest = l2 * theta - Z[m < 1 - 1e-9].sum(0) / n
    beta = np.linalg.lstsq(Z[on].T / n, rest, rcond=None)[0]
    assert np.abs(Z[on].T @ beta / n - rest).max() < 1e-12
    assert beta.min() > -1e-9 and beta.max() < 1 + 1e-9
    primal = lambda th: np.maximum(0, 1 - Z @ th).sum() / n + 0.5 * l2 * th @ th  # noqa: E731
    assert primal(theta) < 0.0227329009  # the stalled dual solve's primal value was 0.1105 (0.0227329020 restarted)


def test_hinge_svm_warm_started_leave_one_out_equals_a_cold_solve():
    """Leave-one-out solves start from the full-data sets; the end point must not depend on it."""
    Xtr, ytr, _, _ = datasets.digits((3, 8), seed=0)
    X, y, n, l2 = Xtr.double().numpy(), 2.0 * ytr.double().numpy() - 1.0, len(Xtr), 1e-2
    Z = y[:, None] * X
    full = hinge_svm(Z, l2)
    margins = Z @ full
    for i in (int(np.argmin(margins)), int(np.argmin(np.abs(margins - 1)))):  # a violator, a margin point
        keep = np.arange(n) != i
        np.testing.assert_allclose(hinge_svm(Z[keep], l2, n, start=full), hinge_svm(Z[keep], l2, n), atol=1e-10)


def test_exact_svm_retrain_is_the_change_of_the_hinge_loss_at_the_retrained_weights():
    Xtr, ytr, Xte, yte = datasets.digits((3, 8), seed=0)
    svm = ExactSVM(Xtr, ytr, l2=1e-2, bias=True)
    test = (Xte[:3], yte[:3])
    i = 5
    theta_i = svm.without(i)
    Xa = torch.cat([Xte[:3], torch.ones(3, 1, dtype=Xte.dtype)], 1)
    hinge = lambda th: (1 - (2 * yte[:3].double() - 1) * (Xa @ th)).clamp_min(0)  # noqa: E731
    torch.testing.assert_close(svm([i], test)[:, 0], hinge(theta_i) - hinge(svm.theta), rtol=0, atol=1e-12)
