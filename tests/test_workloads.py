"""Workloads: models trained to a stationary point, and the SVM's exact retraining."""

import numpy as np
import torch

import influencekit as ik
from influencekit.workloads import make_workload, validate


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


def test_smooth_hinge_influence_tracks_svm_retraining_better_than_the_raw_hinge():
    smooth = validate(make_workload("digits-svm", t=1e-3), "exact", k=15)
    raw = validate(make_workload("digits-svm", t=0.0), "exact", k=15)
    assert smooth["pearson"] > raw["pearson"] + 0.3
    assert smooth["pearson_newton"] > 0.9
    assert np.isfinite(smooth["predicted"]).all()
