"""``experiments.validate``: influence against leave-one-out retraining, as a result to print and report."""

import dataclasses
import json

import numpy as np
from scipy.stats import pearsonr

import influencekit as ik
from influencekit.experiments import problems, validate
from influencekit.experiments.report import Page


def test_logistic_influence_predicts_retraining_and_the_result_reports_it():
    r = validate.run(problems.make("digits-logreg"), "exact", k=10)
    assert r.k == 10 and r.solver == "exact" and r.n == 253 and r.p == 65 and r.pearson > 0.99
    assert r.pearson == np.float64(pearsonr(r.predicted, r.actual).statistic)
    assert [abs(v) for v in r.predicted] == sorted((abs(v) for v in r.predicted), reverse=True)
    out = json.loads(json.dumps(r.to_json()))
    assert "positive = harmful" in out["convention"] and out["problem"] == "digits-logreg" and out["k"] == 10
    assert "pearson_newton" not in out  # only problems that ask for the Newton-step estimate carry it
    page = Page("validate")
    r.report(page)
    assert page.n_figures == 1 and page.n_tables == 1 and "Pearson" in page.render()


def test_smooth_hinge_influence_tracks_svm_retraining_better_than_the_raw_hinge():
    smooth = validate.run(problems.make("digits-svm", t=1e-3), "exact", k=15)
    raw = validate.run(problems.make("digits-svm", t=0.0), "exact", k=15)
    assert smooth.pearson > raw.pearson + 0.3
    assert smooth.newton["pearson"] > 0.9 and smooth.to_json()["pearson_newton"] == smooth.newton["pearson"]
    assert np.isfinite(smooth.predicted).all()


def test_smooth_hinge_influence_at_the_svm_matches_exact_hinge_retraining_on_mnist(data_dir):
    """Koh & Liang's hinge setting (MNIST 1 vs 7, no bias, l2 0.01): SmoothHinge(0.001) influence
    at the SVM's weights against exact leave-one-out retraining of the hinge SVM."""
    p = problems.make("mnist-svm", data_dir=data_dir)
    smooth = validate.run(p, "exact", k=20)
    assert smooth.pearson > 0.95, smooth.pearson
    raw = validate.run(dataclasses.replace(p, loss=ik.SmoothHinge(0.0)), "exact", k=20)  # the same SVM, t = 0
    assert raw.pearson < smooth.pearson - 0.2  # the raw hinge (H = l2 I) misses the margin's curvature


def test_a_correlation_over_fewer_than_two_points_is_refused_with_the_fix():
    import pytest

    with pytest.raises(ik.InputError, match="k must be an integer >= 2"):
        validate.run(problems.make("digits-logreg"), k=1)
