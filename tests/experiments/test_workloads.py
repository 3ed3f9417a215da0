"""Workloads: models trained to a stationary point, and the SVM's exact retraining."""

import dataclasses

import numpy as np
import torch

import influencekit as ik
from influencekit.experiments.workloads import make_workload, validate


def test_logistic_workload_is_trained_to_a_stationary_point():
    w = make_workload("digits-logreg")
    _, g = w.objective().risk(with_grad=True)
    assert g.abs().max() < 1e-8


def test_svm_retraining_solves_the_hinge_objective_exactly():
    w = make_workload("digits-svm", t=0.0)
    X, y = w.train
    obj = ik.Objective(w.model, "hinge", w.train, l2=w.l2)
    theta = obj.theta.clone()
    risk = lambda th: obj.risk(th)[0].item()  # noqa: E731
    base = risk(theta)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # no small random move lowers the (convex) objective
        assert risk(theta + 1e-4 * torch.randn(obj.p, generator=g, dtype=torch.float64)) >= base - 1e-12
    # removing a point that is not a support vector changes nothing
    margins = (2 * y - 1) * w.model(X).detach()
    far = int(torch.nonzero(margins > 1.5)[0])
    assert w.retrain([far], w.test)[0].abs().max() < 1e-8


def test_hinge_svm_meets_the_kkt_conditions_where_a_plain_dual_solve_stalls():
    """digits 1 vs 7 at l2 = 0.01: L-BFGS-B on the dual alone stopped at a 5 % duality gap."""
    from influencekit.experiments import datasets
    from influencekit.experiments.workloads import hinge_svm

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
    from influencekit.experiments import datasets
    from influencekit.experiments.workloads import hinge_svm

    Xtr, ytr, _, _ = datasets.digits((3, 8), seed=0)
    X, y, n, l2 = Xtr.double().numpy(), 2.0 * ytr.double().numpy() - 1.0, len(Xtr), 1e-2
    Z = y[:, None] * X
    full = hinge_svm(Z, l2)
    margins = Z @ full
    for i in (int(np.argmin(margins)), int(np.argmin(np.abs(margins - 1)))):  # a violator, a margin point
        keep = np.arange(n) != i
        np.testing.assert_allclose(hinge_svm(Z[keep], l2, n, start=full), hinge_svm(Z[keep], l2, n), atol=1e-10)


def test_smooth_hinge_influence_tracks_svm_retraining_better_than_the_raw_hinge():
    smooth = validate(make_workload("digits-svm", t=1e-3), "exact", k=15)
    raw = validate(make_workload("digits-svm", t=0.0), "exact", k=15)
    assert smooth["pearson"] > raw["pearson"] + 0.3
    assert smooth["pearson_newton"] > 0.9
    assert np.isfinite(smooth["predicted"]).all()


def test_smooth_hinge_influence_at_the_svm_matches_exact_hinge_retraining_on_mnist(data_dir):
    """Koh & Liang's hinge setting (MNIST 1 vs 7, no bias, l2 0.01): SmoothHinge(0.001) influence
    at the SVM's weights against exact leave-one-out retraining of the hinge SVM."""
    w = make_workload("mnist-svm", data_dir=data_dir)
    smooth = validate(w, "exact", k=20)
    assert smooth["pearson"] > 0.95, smooth["pearson"]
    raw = validate(dataclasses.replace(w, loss=ik.SmoothHinge(0.0)), "exact", k=20)  # the same SVM, t = 0
    assert raw["pearson"] < smooth["pearson"] - 0.2  # the raw hinge (H = l2 I) misses the margin's curvature
