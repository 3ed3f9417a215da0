"""One type for every problem the experiments run on: a trained model, its data, and its recipe.

A ``Problem`` is what a user brings to influencekit, plus what an experiment needs to check the
answer: how the model was trained (the L2 it was trained with, how to retrain it without some
points) and the damping that influence uses on it by default. Every use (explain, mislabel,
mismatch, attack, topk, tune, validate) takes one, and builds its ``Influence`` through
``Problem.influence`` so that the problem's defaults apply everywhere alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConvergenceWarning, InputError
from ..influence import Influence
from ..losses import LossFn, SmoothHinge, get_loss
from ..objective import Objective
from ..retrain import minimize, newton
from . import datasets
from .models import MLP, LogisticRegression, SmallCNN, train
from .svm import ExactSVM

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
        damping: the damping influence uses on this problem unless told otherwise (None: the
            automatic per-block damping of ``kfac``, ``ekfac`` and ``datainf``).
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
    damping: float | None = 0.0
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

    def objective(self, **options: Any) -> Objective:
        """The problem's training objective R(theta) at the trained weights, for methods that take
        an ``Objective`` rather than the face; ``options``: batch_size, dtype, device."""
        return Objective(self.model, self.loss, self.train, l2=self.l2, params=self.params, **options)

    def test_losses(self) -> Tensor:
        """L(z_test, theta_hat) for every test point: [m]."""
        X, y = self.test
        with torch.no_grad():
            return get_loss(self.test_loss or self.loss)(self.model(X), y)

    def test_at(self, index: int | list[int]) -> Pair:
        """The test points at ``index`` as an (X, y) pair (a list keeps its order); a typed error
        names the valid range when an index is outside the test set."""
        idx = [index] if isinstance(index, int) else [int(i) for i in index]
        m = len(self.test[0])
        bad = [i for i in idx if not 0 <= i < m]
        if bad:
            raise InputError(f"test index {bad} out of range; the {self.name} test set has {m} points "
                             f"(0 to {m - 1}).")
        at = torch.as_tensor(idx, dtype=torch.long)
        return self.test[0][at], self.test[1][at]


# ---- the named problems -----------------------------------------------------------------------

def _fit_convex(model: nn.Module, loss: str, train_pair: Pair, l2: float) -> nn.Module:
    obj = Objective(model, loss, train_pair, l2=l2, batch_size=4096)
    return obj.to_model(minimize(obj, newton_steps=1 if obj.p <= 2000 else 0)).eval()


def digits_logreg(seed: int = 0, n_train: int | None = None, l2: float = 1e-2, **_: Any) -> Problem:
    """Logistic regression on scikit-learn's digits 1 vs 7 (bundled; n = 253, or the first
    ``n_train``), float64, trained to round-off stationarity."""
    Xtr, ytr, Xte, yte = datasets.digits((1, 7), seed=seed)
    Xtr, ytr = Xtr[:n_train], ytr[:n_train]
    torch.manual_seed(seed)  # the starting weights: the optimiser stops within its tolerance of the minimum
    model = _fit_convex(LogisticRegression(64).double(), "logistic", (Xtr, ytr), l2=l2)
    return Problem("digits-logreg", model, "logistic", (Xtr, ytr), (Xte, yte), l2=l2,
                   solver_options={"lissa": {"depth": 1000, "repeats": 4}},
                   notes=f"logistic regression, digits 1 vs 7, n = {len(Xtr)}, float64, l2 {l2}")


def mnist_logreg(data_dir: str | None = None, seed: int = 0, **_: Any) -> Problem:
    """Logistic regression on MNIST 1 vs 7 (n = 13,007; needs mnist.npz), float64, as digits-logreg."""
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes=(1, 7), flatten=True, dtype=torch.float64)
    torch.manual_seed(seed)
    model = _fit_convex(LogisticRegression(784).double(), "logistic", (Xtr, ytr), l2=1e-2)
    return Problem("mnist-logreg", model, "logistic", (Xtr, ytr), (Xte, yte), l2=1e-2,
                   solver_options={"lissa": {"depth": 1000, "repeats": 4}},
                   notes=f"logistic regression, MNIST 1 vs 7, n = {len(Xtr)}, float64, l2 0.01")


def _fit_cnn(model: nn.Module, Xtr: Tensor, ytr: Tensor, l2: float, seed: int, polish_iter: int = 1000,
             newton_steps: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # One thread for the float32 SGD phase: the order of its floating-point sums depends on the
    # thread count, and 30 epochs of SGD amplify that into another local minimum. With one thread
    # the SGD result no longer depends on the machine's thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train(model, "cross_entropy", Xtr.float(), ytr, l2=l2, epochs=30, batch_size=50, lr=3e-3, seed=seed)
    finally:
        torch.set_num_threads(threads)
    model = model.double()
    # Polish to a stationary point in float64: influence linearises around a minimum, and the
    # leave-one-out retrains start from (and must end at) the same kind of point.
    # Newton steps then take L-BFGS's end point to the isolated minimum next to it (round-off),
    # so that the trained network no longer depends on where L-BFGS stopped in a flat valley.
    obj = Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=1000)
    with warnings.catch_warnings():
        if newton_steps:  # L-BFGS's own stopping point is not the end point here
            warnings.simplefilter("ignore", ConvergenceWarning)
        model = obj.to_model(minimize(obj, grad_tol=1e-9, max_iter=polish_iter)).eval()
    if newton_steps:
        obj = Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=1000)
        model = obj.to_model(newton(obj, steps=newton_steps)).eval()
    return model


def mnist_cnn(data_dir: str | None = None, seed: int = 0, n_train: int | None = None, l2: float = 1e-2,
              steps: int = 2000, **_: Any) -> Problem:
    """A small tanh CNN (SmallCNN(channels=(4, 8), hidden=16), 3,146 parameters) on a random
    10-class MNIST subset (``n_train``, default 500), float64, l2 = 0.01, damping 1e-3.

    Leave-one-out here is ``steps`` full-batch gradient steps from the trained network (step
    1 / lambda_max), Koh & Liang's protocol for their CNN, not a retrain to a stationary point:
    H has a band of eigenvalues far below l2 (units that weight decay holds switched off, whose
    negative loss curvature nearly cancels l2), and removing one of the most influential points
    can make the leave-one-out Hessian indefinite, so a converged retrain leaves the basin and
    its end point changes with round-off. 2,000 steps match damping 1e-3 in the sense of
    ``retrain.descend`` (lr N d ~ ln 2).
    """
    n_train = n_train or 500
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(Xtr), generator=g)[:n_train]
    Xtr, ytr, Xte, yte = Xtr[idx], ytr[idx], Xte[:1000], yte[:1000]
    torch.manual_seed(seed)  # the initial weights too: the network must not depend on what ran before
    model = _fit_cnn(SmallCNN(channels=(4, 8), hidden=16), Xtr, ytr, l2=l2, seed=seed, newton_steps=3)
    return Problem("mnist-cnn", model, "cross_entropy", (Xtr, ytr), (Xte, yte), l2=l2, damping=1e-3,
                   solver_options={"cg": {"tol": 1e-8, "max_iter": 1000}}, retrain_options={"steps": steps},
                   notes=f"SmallCNN(4, 8, 16), {n_train} random MNIST training points, float64, l2 {l2}, "
                         f"damping 1e-3; leave-one-out = {steps} full-batch gradient steps from the trained network")


def digits_cnn(seed: int = 0, n_train: int | None = None, **_: Any) -> Problem:
    """SmallCNN(4, 8, 16) on 10-class digits upsampled to 28x28 (the first ``n_train``, default
    400), float64, l2 = 0.01, damping 1e-3; leave-one-out retrains to a stationary point."""
    n_train = n_train or 400
    Xtr, ytr, Xte, yte = datasets.digits(classes=None, seed=seed)
    pad = lambda X: nn.functional.pad(X.reshape(-1, 1, 8, 8).repeat_interleave(3, 2).repeat_interleave(3, 3),
                                      (2, 2, 2, 2))  # noqa: E731 - 8x8 -> 24x24 -> 28x28
    Xtr, ytr, Xte, yte = pad(Xtr)[:n_train], ytr[:n_train], pad(Xte), yte
    torch.manual_seed(seed)
    model = _fit_cnn(SmallCNN(channels=(4, 8), hidden=16), Xtr, ytr, l2=1e-2, seed=seed, polish_iter=300)
    return Problem("digits-cnn", model, "cross_entropy", (Xtr, ytr), (Xte, yte), l2=1e-2, damping=1e-3,
                   solver_options={"cg": {"tol": 1e-8, "max_iter": 300}},
                   notes=f"small SmallCNN(4, 8, 16) on {n_train} digits upsampled to 28x28")


def _linear_svm(name: str, split: tuple[Tensor, Tensor, Tensor, Tensor], t: float, l2: float, bias: bool,
                notes: str) -> Problem:
    """A hinge SVM trained exactly, with influence taken at its own weights using SmoothHinge(t)
    for the gradients and the Hessian (t = 0: the raw hinge, whose Hessian is just l2 I), as in
    Koh & Liang's released code. The SVM is not a stationary point of the smooth objective (its
    smooth gradient is O(t)); that is the price of the surrogate, and the check measures it."""
    Xtr, ytr, Xte, yte = split
    svm = ExactSVM(Xtr, ytr, l2, bias)
    model = LogisticRegression(Xtr.shape[1], bias=bias).double()
    with torch.no_grad():
        model.linear.weight.copy_(svm.theta[:Xtr.shape[1]][None])
        if bias:
            model.linear.bias.copy_(svm.theta[-1:])
    return Problem(name, model.eval(), SmoothHinge(t), (Xtr, ytr), (Xte, yte), l2=l2, retrain=svm,
                   test_loss=get_loss("hinge"), newton=True, expect_stationary=False,
                   notes=f"{notes}; hinge SVM (l2 {l2}, {'regularised bias' if bias else 'no bias'}) trained "
                         f"and retrained exactly (active set); influence with SmoothHinge(t={t}) at its weights")


def digits_svm(seed: int = 0, t: float = 1e-3, classes: tuple[int, int] = (3, 8), l2: float = 1e-2,
               bias: bool = True, **_: Any) -> Problem:
    """Linear SVM on digits 3 vs 8 (a pair that is not separable with margin: many support
    vectors), n = 250."""
    return _linear_svm("digits-svm", datasets.digits(tuple(classes), seed=seed), t, l2, bias,
                       f"digits {classes[0]} vs {classes[1]}")


def mnist_svm(data_dir: str | None = None, t: float = 1e-3, l2: float = 1e-2, bias: bool = False,
              **_: Any) -> Problem:
    """Linear SVM on MNIST 1 vs 7 (n = 13,007, p = 784, no bias): Koh & Liang's hinge setting."""
    split = datasets.mnist(data_dir, classes=(1, 7), flatten=True, dtype=torch.float64)
    return _linear_svm("mnist-svm", split, t, l2, bias, "MNIST 1 vs 7")


def digits_mlp(seed: int = 0, n_train: int | None = None, epochs: int | None = None, **_: Any) -> Problem:
    """An MLP (64 -> 32 tanh -> 10) on 10-class digits (bundled; the first ``n_train``), float64,
    ``epochs`` of Adam (default 10) polished towards a stationary point by L-BFGS; l2 = 0.001,
    damping 0.01. The model ``topk`` and ``tune`` run on by default."""
    torch.manual_seed(seed)
    epochs = 10 if epochs is None else epochs
    Xtr, ytr, Xte, yte = datasets.digits(classes=None, seed=seed)
    if n_train:
        Xtr, ytr = Xtr[:n_train], ytr[:n_train]
    l2 = 1e-3
    model = train(MLP(64, (32,), 10).double(), "cross_entropy", Xtr, ytr, l2=l2, epochs=epochs,
                  batch_size=64, lr=1e-2, seed=seed)
    obj = Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=2048)
    model = obj.to_model(minimize(obj, grad_tol=1e-6, max_iter=300)).eval()
    return Problem("digits-mlp", model, "cross_entropy", (Xtr, ytr), (Xte, yte), l2=l2, damping=1e-2,
                   notes=f"MLP 64-32-10 (tanh), digits, n = {len(Xtr)}, float64, Adam + L-BFGS, l2 = {l2}, "
                         "damping 0.01")


def mnist_cnn_full(data_dir: str | None = None, seed: int = 0, n_train: int | None = None,
                   epochs: int | None = None, **_: Any) -> Problem:
    """``models.SmallCNN`` on the first ``n_train`` MNIST training images (default all 60,000;
    needs mnist.npz), float32, ``epochs`` of Adam (default 3), l2 = 0.001. A network is not at an
    exact minimum, so influence uses damping 0.01 (Koh & Liang's for their CNN). The FastIF model."""
    torch.manual_seed(seed)
    epochs = 3 if epochs is None else epochs
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir)
    Xtr, ytr = Xtr[: n_train or len(Xtr)], ytr[: n_train or len(Xtr)]
    l2 = 1e-3
    model = train(SmallCNN(), "cross_entropy", Xtr, ytr, l2=l2, epochs=epochs, batch_size=128, lr=3e-3, seed=seed)
    return Problem("mnist-cnn-full", model, "cross_entropy", (Xtr, ytr), (Xte, yte), l2=l2, damping=1e-2,
                   expect_stationary=False,
                   notes=f"SmallCNN (11,978 params), MNIST n = {len(Xtr)}, float32, Adam {epochs} epochs, "
                         f"l2 = {l2}, damping 0.01")


#: problem name -> builder(**options) -> Problem; options: data_dir, seed, and the builder's own
#: (n_train, t, l2, ...); a builder ignores options meant for another.
PROBLEMS: dict[str, Callable[..., Problem]] = {
    "digits-logreg": digits_logreg,
    "mnist-logreg": mnist_logreg,
    "mnist-cnn": mnist_cnn,
    "digits-cnn": digits_cnn,
    "digits-svm": digits_svm,
    "mnist-svm": mnist_svm,
    "digits-mlp": digits_mlp,
    "mnist-cnn-full": mnist_cnn_full,
}


def make(name: str, **options: Any) -> Problem:
    """Build (and train) the named problem of ``PROBLEMS``; ``options`` go to its builder."""
    if name not in PROBLEMS:
        raise InputError(f"unknown problem {name!r}; choose one of {', '.join(PROBLEMS)}.")
    return PROBLEMS[name](**options)
