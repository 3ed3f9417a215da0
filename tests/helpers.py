"""Small float64 problems shared by the tests (not fixtures: plain functions, seeded)."""

from __future__ import annotations

import torch

import influencekit as ik
from influencekit import datasets
from influencekit.models import LogisticRegression


def logistic_digits(l2: float = 1e-2, n_train: int = 200):
    """Logistic regression on digits 1 vs 7, trained to a stationary point in float64.
    Returns (objective, model, (Xte, yte)); p = 65."""
    Xtr, ytr, Xte, yte = datasets.digits((1, 7))
    Xtr, ytr = Xtr[:n_train], ytr[:n_train]
    model = LogisticRegression(64).double()
    obj = ik.Objective(model, "logistic", (Xtr, ytr), l2=l2, batch_size=64)
    model = obj.to_model(ik.minimize(obj, newton_steps=2)).eval()
    obj = ik.Objective(model, "logistic", (Xtr, ytr), l2=l2, batch_size=64)
    return obj, model, (Xte, yte)


def worst_test_point(obj, test):
    """The test point with the highest loss, as a 1-point (X, y) pair."""
    X, y = test
    losses = obj.losses(obj.theta, *obj.cast(X, y))
    j = int(losses.argmax())
    return X[j:j + 1], y[j:j + 1]
