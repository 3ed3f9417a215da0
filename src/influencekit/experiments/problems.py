"""One type for every problem the experiments run on: a trained model, its data, and its recipe.

A ``Problem`` is what a user brings to influencekit, plus what an experiment needs to check the
answer: how the model was trained (the L2 it was trained with, how to retrain it without some
points) and the damping that influence uses on it by default. Every use (explain, mislabel,
mismatch, attack, topk, tune, validate) takes one, and builds its ``Influence`` through
``Problem.influence`` so that the problem's defaults apply everywhere alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..influence import Influence
from ..losses import LossFn, get_loss

Pair = tuple[Tensor, Tensor]


@dataclass
class Problem:
    """A trained model with everything needed to compute and check its influence.

    Args:
        name: short identifier (``digits-logreg``, ``mnist-cnn``, ...).
        model: the trained module, in eval mode.
        loss: the per-example training loss (a name from ``influencekit.losses`` or a callable).
        train: training data (X [n, ...], y [n, ...]).
        test: test data (X [m, ...], y [m, ...]).
        l2: the L2 coefficient the model was trained with.
        damping: the damping influence uses on this problem unless told otherwise.
        solver: the default inverse-HVP solver.
        params: parameter names in scope (default: all trainable).
        test_loss: the loss measured on test points, if not ``loss``.
        solver_options: per solver name, options that suit this problem (``{"cg": {"tol": 1e-8}}``).
        retrain: ``retrain(remove, test) -> [m, len(remove)]``, the actual change of the test loss
            when each point is removed; default: ``loo_retrain`` on the problem's ``Influence``.
        retrain_options: options of ``loo_retrain`` (``steps=`` for gradient-step retraining).
        expect_stationary: False when influence is taken off the loss's stationary point on purpose
            (e.g. a smoothed hinge at the SVM's optimum); the stationarity warning is then expected.
        newton: also report the Newton-step leave-one-out estimate (``Influence.loo_newton``).
        notes: one line for reports: how the model was built and trained.
        extra: anything problem-specific an experiment needs (feature names, classes, ...).
    """

    name: str
    model: nn.Module
    loss: str | LossFn
    train: Pair
    test: Pair
    l2: float
    damping: float = 0.0
    solver: str = "cg"
    params: list[str] | None = None
    test_loss: LossFn | None = None
    solver_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrain: Callable[[list[int], Pair], Tensor] | None = None
    retrain_options: dict[str, Any] = field(default_factory=dict)
    expect_stationary: bool = True
    newton: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def influence(self, solver: str | None = None, **options: Any) -> Influence:
        """The problem's ``Influence``: its model, loss, data and l2, with ``solver`` (default: the
        problem's) and the problem's damping and solver options unless ``options`` override them."""
        solver = solver or self.solver
        opts = {**self.solver_options.get(solver, {}), **options}
        return Influence(self.model, self.loss, self.train, l2=self.l2, params=self.params, solver=solver,
                         damping=opts.pop("damping", self.damping), test_loss=self.test_loss, **opts)

    def test_losses(self) -> Tensor:
        """L(z_test, theta_hat) for every test point: [m]."""
        X, y = self.test
        with torch.no_grad():
            return get_loss(self.test_loss or self.loss)(self.model(X), y)
