"""Small float64 problems shared by the tests (not fixtures: plain functions, seeded)."""

from __future__ import annotations

import warnings

import torch

import influencekit as ik
from influencekit.experiments import datasets, problems


def logistic_digits(l2: float = 1e-2, n_train: int = 200):
    """The digits-logreg problem (logistic regression on digits 1 vs 7, float64, stationary) on its
    first ``n_train`` training points. Returns (objective, model, (Xte, yte)); p = 65."""
    p = problems.make("digits-logreg", n_train=n_train, l2=l2)
    return p.objective(batch_size=64), p.model, p.test


def worst_test_point(obj, test):
    """The test point with the highest loss, as a 1-point (X, y) pair."""
    X, y = test
    losses = obj.losses(obj.theta, *obj.cast(X, y))
    j = int(losses.argmax())
    return X[j:j + 1], y[j:j + 1]


def digits_mlp(hidden: int = 8, l2: float = 1e-3, n_train: int = 300, classes=None, polish: int = 200):
    """A tanh MLP 64 -> hidden -> 10 on digits in float64: Adam, then ``polish`` L-BFGS steps
    towards a stationary point. Returns (objective, (Xte, yte)); p = 75 * hidden + 10."""
    from influencekit.experiments.models import MLP, train

    Xtr, ytr, Xte, yte = datasets.digits() if classes is None else datasets.digits(classes)
    Xtr, ytr = Xtr[:n_train].double(), ytr[:n_train]
    torch.manual_seed(0)
    model = train(MLP(64, (hidden,), 10).double(), "cross_entropy", Xtr, ytr, l2=l2, epochs=15, lr=2e-2)
    obj = ik.Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=300)
    with warnings.catch_warnings():  # not being at round-off stationarity is fine for solver comparisons
        warnings.simplefilter("ignore")
        model = obj.to_model(ik.minimize(obj, max_iter=polish)).eval()
    return ik.Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=300), (Xte.double(), yte)


class Saddle(torch.nn.Module):
    """f(x) = a * b * x_0 at a = b = 0: with the mse loss the Hessian is [[0, c], [c, 0]],
    indefinite (eigenvalues +-c), the smallest case of negative curvature."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

    def forward(self, x):
        return self.a * self.b * x[:, 0]


def digits_lora(r: int = 2, n_train: int = 300, l2: float = 1e-3):
    """A tanh MLP 64 -> 16 -> 16 -> 10 trained on digits 0-4 and frozen, then LoRA adapters of rank r
    on both hidden layers and its head fine-tuned on all ten digits (Adam, then 200 L-BFGS steps), in
    float64. Returns (objective over the trainable parameters, (Xte, yte))."""
    from torch import nn

    from influencekit.experiments.models import LoRALinear, train

    Xtr, ytr, Xte, yte = datasets.digits()
    Xtr, ytr = Xtr[:n_train].double(), ytr[:n_train]
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    base = train(base, "cross_entropy", Xtr[ytr < 5], ytr[ytr < 5], l2=l2, epochs=15, lr=2e-2)
    base.requires_grad_(False)
    base[0], base[2] = LoRALinear(base[0], r, 2.0 * r, dropout=0.1), LoRALinear(base[2], r, 2.0 * r, dropout=0.1)
    base[4].requires_grad_(True)
    model = train(base, "cross_entropy", Xtr, ytr, l2=l2, epochs=15, lr=2e-2)
    obj = ik.Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = obj.to_model(ik.minimize(obj, max_iter=200)).eval()
    return ik.Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=300), (Xte.double(), yte)
