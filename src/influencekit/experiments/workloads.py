"""Named, reproducible validation workloads: a trained model, its data, and how to retrain it.

Each workload trains its model to a stationary point of (1/n) sum L + (l2/2)||theta||^2 (the
objective influence assumes) and knows how to retrain it leave-one-out, so ``validate`` can
compare predicted and actual changes in test loss.

==================  =========================================================  ==========
name                model / data                                                needs data
==================  =========================================================  ==========
digits-logreg       logistic regression, scikit-learn digits 1 vs 7 (n=252)     bundled
mnist-logreg        logistic regression, MNIST 1 vs 7 (n=13,007)               mnist.npz
mnist-cnn           SmallCNN(4, 8, 16) (3,146 params), MNIST subset (n=500)   mnist.npz
                    leave-one-out by 2,000 gradient steps from the warm start
digits-cnn          SmallCNN(4, 8, 16) on digits padded to 28x28 (n=400)       bundled
digits-svm          linear SVM (hinge), digits 3 vs 8; influence via           bundled
                    SmoothHinge(t) at the SVM, retraining with the exact hinge
mnist-svm           linear SVM (hinge, no bias), MNIST 1 vs 7 (n=13,007), as   mnist.npz
                    digits-svm (Koh & Liang's hinge experiment)
==================  =========================================================  ==========
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from torch import Tensor, nn

from ..convention import SIGN_CONVENTION
from ..errors import ConvergenceWarning, InputError
from ..influence import Influence
from ..losses import LossFn, SmoothHinge, get_loss
from ..objective import Objective
from ..retrain import loo_retrain, minimize, newton
from . import datasets
from .models import LogisticRegression, SmallCNN, train

Pair = tuple[Tensor, Tensor]


@dataclass
class Workload:
    """A trained model with everything needed to compute and check its influence.

    ``loss`` is the loss influence is computed with; ``retrain(remove, test)`` returns the
    actual change of the test loss [m, len(remove)] when each point is removed (default:
    ``retrain.loo_retrain`` on ``loss``).
    """

    name: str
    model: nn.Module
    loss: LossFn
    train: Pair
    test: Pair
    l2: float
    damping: float = 0.0
    solver_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrain: Callable[[list[int], Pair], Tensor] | None = None
    test_loss: LossFn | None = None
    newton: bool = False  # also report the Newton-step LOO estimate (Influence.loo_newton)
    retrain_options: dict[str, Any] = field(default_factory=dict)  # for retrain.minimize
    expect_stationary: bool = True  # False: influence is taken off the loss's stationary point on purpose
    notes: str = ""

    def objective(self, **kwargs: Any) -> Objective:
        return Objective(self.model, self.loss, self.train, l2=self.l2, **kwargs)

    def influence(self, solver: str, **options: Any) -> Influence:
        opts = {**self.solver_options.get(solver, {}), **options}
        return Influence(self.model, self.loss, self.train, l2=self.l2, solver=solver,
                         damping=opts.pop("damping", self.damping), test_loss=self.test_loss, **opts)

    def test_losses(self) -> Tensor:
        X, y = self.test
        with torch.no_grad():
            return get_loss(self.test_loss or self.loss)(self.model(X), y)


def _fit_convex(model: nn.Module, loss: str, train_pair: Pair, l2: float) -> nn.Module:
    obj = Objective(model, loss, train_pair, l2=l2, batch_size=4096)
    return obj.to_model(minimize(obj, newton_steps=1 if obj.p <= 2000 else 0)).eval()


def digits_logreg(seed: int = 0, **_: Any) -> Workload:
    Xtr, ytr, Xte, yte = datasets.digits((1, 7), seed=seed)
    model = _fit_convex(LogisticRegression(64).double(), "logistic", (Xtr, ytr), l2=1e-2)
    return Workload("digits-logreg", model, get_loss("logistic"), (Xtr, ytr), (Xte, yte), l2=1e-2,
                    solver_options={"lissa": {"depth": 1000, "repeats": 4}})


def mnist_logreg(data_dir: str | None = None, **_: Any) -> Workload:
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes=(1, 7), flatten=True, dtype=torch.float64)
    model = _fit_convex(LogisticRegression(784).double(), "logistic", (Xtr, ytr), l2=1e-2)
    return Workload("mnist-logreg", model, get_loss("logistic"), (Xtr, ytr), (Xte, yte), l2=1e-2,
                    solver_options={"lissa": {"depth": 1000, "repeats": 4}})


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


def mnist_cnn(data_dir: str | None = None, seed: int = 0, n_train: int = 500, l2: float = 1e-2,
              steps: int = 2000, **_: Any) -> Workload:
    """A small tanh CNN (SmallCNN(channels=(4, 8), hidden=16), 3,146 parameters) on a random
    10-class MNIST subset, float64, l2 = 0.01, damping 1e-3.

    Leave-one-out here is ``steps`` full-batch gradient steps from the trained network (step
    1 / lambda_max), Koh & Liang's protocol for their CNN, not a retrain to a stationary point:
    H has a band of eigenvalues far below l2 (3e-4 against l2 = 1e-2: units that weight decay
    holds switched off, whose negative loss curvature nearly cancels l2), and removing one of
    the most influential points can make the leave-one-out Hessian indefinite (measured), so a
    converged retrain leaves the basin and its end point changes with round-off. 2,000 steps
    match damping 1e-3 in the sense of ``retrain.descend`` (lr N d ~ ln 2).
    """
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(Xtr), generator=g)[:n_train]
    Xtr, ytr, Xte, yte = Xtr[idx], ytr[idx], Xte[:1000], yte[:1000]
    torch.manual_seed(seed)  # the initial weights too: the network must not depend on what ran before
    model = _fit_cnn(SmallCNN(channels=(4, 8), hidden=16), Xtr, ytr, l2=l2, seed=seed, newton_steps=3)
    return Workload("mnist-cnn", model, get_loss("cross_entropy"), (Xtr, ytr), (Xte, yte), l2=l2,
                    damping=1e-3, solver_options={"cg": {"tol": 1e-8, "max_iter": 1000}},
                    retrain_options={"steps": steps},
                    notes=f"SmallCNN(4, 8, 16), {n_train} random MNIST training points, float64, l2 {l2}, "
                          f"damping 1e-3; leave-one-out = {steps} full-batch gradient steps from the trained network")


def digits_cnn(seed: int = 0, n_train: int = 400, **_: Any) -> Workload:
    Xtr, ytr, Xte, yte = datasets.digits(classes=None, seed=seed)
    pad = lambda X: nn.functional.pad(X.reshape(-1, 1, 8, 8).repeat_interleave(3, 2).repeat_interleave(3, 3),
                                      (2, 2, 2, 2))  # noqa: E731 - 8x8 -> 24x24 -> 28x28
    Xtr, ytr, Xte, yte = pad(Xtr)[:n_train], ytr[:n_train], pad(Xte), yte
    torch.manual_seed(seed)
    model = _fit_cnn(SmallCNN(channels=(4, 8), hidden=16), Xtr, ytr, l2=1e-2, seed=seed, polish_iter=300)
    return Workload("digits-cnn", model, get_loss("cross_entropy"), (Xtr, ytr), (Xte, yte), l2=1e-2,
                    damping=1e-3, solver_options={"cg": {"tol": 1e-8, "max_iter": 300}},
                    notes=f"small SmallCNN(4, 8, 16) on {n_train} digits upsampled to 28x28")


def hinge_svm(Z: np.ndarray, l2: float, n: int | None = None, start: np.ndarray | None = None) -> np.ndarray:
    """The exact minimiser theta [p] of (1/n) sum_i max(0, 1 - z_i . theta) + (l2/2)||theta||^2,
    for rows z_i = y_i [x_i, 1] (or y_i x_i without a bias) of Z [m, p] (``n`` defaults to m;
    leave-one-out keeps the original n, the eps = -1/n convention).

    The objective is piecewise quadratic, so the minimiser solves a linear system once the
    points are sorted into margin > 1 (beta = 0), margin < 1 (beta = 1) and margin = 1 (beta in
    [0, 1]): l2 theta = (1/n) sum_i beta_i z_i with z_i . theta = 1 on the last set. A dual
    L-BFGS-B solve gives the starting sets (it stalls short of the optimum on this rank-deficient
    QP: duality gaps of 5 % were seen), then one violated KKT condition at a time is repaired
    until none is left; the result is exact to round-off. Raises RuntimeError if it is not.
    ``start`` [p], a nearby solution (for leave-one-out: the full-data one), replaces the dual
    solve: its margins give the starting sets, and only the few changed points need repair.
    """
    from scipy.optimize import minimize as lbfgsb

    m, n = len(Z), len(Z) if n is None else n
    if start is None:
        def dual(a: np.ndarray) -> tuple[float, np.ndarray]:
            w = Z.T @ a  # Z Z^T a without forming the [m, m] Gram matrix
            return 0.5 * w @ w - a.sum(), Z @ w - 1.0

        res = lbfgsb(dual, np.zeros(m), jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0 / (n * l2))] * m,
                     options={"ftol": 1e-16, "gtol": 1e-14, "maxiter": 100_000, "maxcor": 50})
        start = Z.T @ res.x
    margin = Z @ start
    state = np.where(margin > 1 + 1e-3, 0, np.where(margin < 1 - 1e-3, 2, 1))  # 0: beta 0, 2: beta 1, 1: free
    tol = 1e-10
    for _ in range(20 * m):
        free, upper = state == 1, state == 2
        rhs_u = Z[upper].sum(0)
        Zf = Z[free]
        # beta_F from Z_F theta = 1 with theta = (rhs_u + Z_F^T beta_F) / (n l2)
        beta = np.linalg.lstsq(Zf @ Zf.T, n * l2 - Zf @ rhs_u, rcond=None)[0] if free.any() else np.zeros(0)
        theta = (rhs_u + Zf.T @ beta) / (n * l2)
        margin = Z @ theta
        b = np.zeros(m)
        b[free] = beta
        viol = np.zeros(m)  # how badly each point breaks its set's condition
        viol[free] = np.maximum(b[free] - 1, 0) + np.maximum(-b[free], 0)
        viol[state == 0] = np.maximum(1 - margin[state == 0], 0)
        viol[upper] = np.maximum(margin[upper] - 1, 0)
        i = int(viol.argmax())
        if viol[i] <= tol:
            return theta
        if state[i] == 1:  # beta left [0, 1]: the point's margin leaves 1 on that side
            state[i] = 2 if b[i] > 1 else 0
        else:  # a point on the wrong side of 1 joins the margin
            state[i] = 1
    raise RuntimeError("hinge SVM active-set solve did not reach its KKT conditions; report this data set.")


def _svm_retrain(Xtr: Tensor, ytr: Tensor, l2: float, bias: bool) -> Callable[[list[int], Pair], Tensor]:
    """Exact hinge-SVM (re)training, min (1/n) sum_i hinge(y_i theta.[x_i, 1]) + (l2/2)||theta||^2
    (``hinge_svm``; with ``bias`` the bias is regularised like every parameter in scope, as in
    liblinear). Removing z_i drops its row and keeps 1/n (the eps = -1/n convention); each
    leave-one-out solve starts from the full-data sets. Returns the actual change in hinge loss."""
    n = len(Xtr)
    augment = lambda X: np.c_[X, np.ones(len(X))] if bias else X  # noqa: E731
    y = 2.0 * ytr.double().numpy() - 1.0
    Z = y[:, None] * augment(Xtr.double().numpy())
    full = hinge_svm(Z, l2)
    hinge = get_loss("hinge")

    def fit(mask: np.ndarray | None = None) -> Tensor:
        return torch.as_tensor(full if mask is None else hinge_svm(Z[mask], l2, n, start=full))

    def loss_at(theta: Tensor, test: Pair) -> Tensor:
        return hinge(torch.as_tensor(augment(test[0].double().numpy())) @ theta, test[1])

    def retrain(remove: list[int], test: Pair) -> Tensor:
        base = loss_at(fit(), test)
        cols = []
        for i in remove:
            mask = np.ones(n, bool)
            mask[i] = False
            cols.append(loss_at(fit(mask), test) - base)
        return torch.stack(cols, 1)

    retrain.fit = fit  # type: ignore[attr-defined]
    return retrain


def _linear_svm(name: str, split: tuple[Tensor, Tensor, Tensor, Tensor], t: float, l2: float, bias: bool,
                notes: str) -> Workload:
    """A hinge SVM trained exactly, with influence taken at its own weights using SmoothHinge(t)
    for the gradients and the Hessian (t = 0: the raw hinge, whose Hessian is just l2 I), as in
    Koh & Liang's released code. The SVM is not a stationary point of the smooth objective (its
    smooth gradient is O(t)); that is the price of the surrogate, and the check measures it."""
    Xtr, ytr, Xte, yte = split
    retrain = _svm_retrain(Xtr, ytr, l2, bias)
    theta = retrain.fit()  # type: ignore[attr-defined]
    model = LogisticRegression(Xtr.shape[1], bias=bias).double()
    with torch.no_grad():
        model.linear.weight.copy_(theta[:Xtr.shape[1]][None])
        if bias:
            model.linear.bias.copy_(theta[-1:])
    return Workload(name, model.eval(), SmoothHinge(t), (Xtr, ytr), (Xte, yte), l2=l2, retrain=retrain,
                    test_loss=get_loss("hinge"), newton=True, expect_stationary=False,
                    notes=f"{notes}; hinge SVM (l2 {l2}, {'regularised bias' if bias else 'no bias'}) trained "
                          f"and retrained exactly (active set); influence with SmoothHinge(t={t}) at its weights")


def digits_svm(seed: int = 0, t: float = 1e-3, classes: tuple[int, int] = (3, 8), l2: float = 1e-2,
               bias: bool = True, **_: Any) -> Workload:
    """Linear SVM on digits 3 vs 8 (a pair that is not separable with margin: many support
    vectors), n = 250."""
    return _linear_svm("digits-svm", datasets.digits(tuple(classes), seed=seed), t, l2, bias,
                       f"digits {classes[0]} vs {classes[1]}")


def mnist_svm(data_dir: str | None = None, t: float = 1e-3, l2: float = 1e-2, bias: bool = False,
              **_: Any) -> Workload:
    """Linear SVM on MNIST 1 vs 7 (n = 13,007, p = 784, no bias): Koh & Liang's hinge setting."""
    split = datasets.mnist(data_dir, classes=(1, 7), flatten=True, dtype=torch.float64)
    return _linear_svm("mnist-svm", split, t, l2, bias, "MNIST 1 vs 7")


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "digits-logreg": digits_logreg,
    "mnist-logreg": mnist_logreg,
    "mnist-cnn": mnist_cnn,
    "digits-cnn": digits_cnn,
    "digits-svm": digits_svm,
    "mnist-svm": mnist_svm,
}


def make_workload(name: str, **options: Any) -> Workload:
    """Build (and train) a named workload; options: data_dir, seed, and per-workload knobs."""
    if name not in WORKLOADS:
        raise InputError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}.")
    return WORKLOADS[name](**options)


def validate(w: Workload, solver: str = "cg", k: int = 50, test_index: int | None = None,
             **solver_options: Any) -> dict[str, Any]:
    """Predicted -(1/n) I_up,loss against actual leave-one-out retraining on the k training
    points with the largest |influence| for one test point (default: the highest-loss one).

    Returns a JSON-able dict: pearson, spearman, k, solver, seconds (influence: fit + s_test
    + scoring), retrain_seconds, test_index, and the predicted/actual pairs.
    """
    j = int(w.test_losses().argmax()) if test_index is None else int(test_index)
    test = (w.test[0][j:j + 1], w.test[1][j:j + 1])
    t0 = time.perf_counter()
    inf = w.influence(solver, **solver_options)
    with warnings.catch_warnings():
        if not w.expect_stationary:  # the workload says why; do not warn about it
            warnings.filterwarnings("ignore", message="the training gradient norm")
        pred = inf.loo(test)[0]
    seconds = time.perf_counter() - t0
    top = pred.abs().argsort(descending=True)[:k].tolist()
    t1 = time.perf_counter()
    if w.retrain is not None:
        actual = w.retrain(top, test)[0]
    else:
        actual = loo_retrain(inf.objective, top, test, test_loss=w.test_loss, **w.retrain_options)[0]
    retrain_seconds = time.perf_counter() - t1
    p, a = pred[top].double().numpy(), actual.double().numpy()
    extra: dict[str, Any] = {}
    if w.newton:
        q = inf.loo_newton(test, top)[0].numpy()
        extra = {"pearson_newton": float(pearsonr(q, a).statistic),
                 "spearman_newton": float(spearmanr(q, a).statistic), "predicted_newton": q.tolist()}
    return {**extra, "workload": w.name, "solver": solver, "k": len(top), "test_index": j,
            "pearson": float(pearsonr(p, a).statistic), "spearman": float(spearmanr(p, a).statistic),
            "seconds": seconds, "retrain_seconds": retrain_seconds,
            "settings": inf.solver.settings(), "n": inf.n, "p": inf.objective.p,
            "predicted": p.tolist(), "actual": a.tolist(), "train_index": top,
            "convention": SIGN_CONVENTION, "notes": w.notes}
