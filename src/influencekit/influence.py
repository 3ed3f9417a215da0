"""The influence quantities of Koh & Liang (2017) for one trained model: the ``Influence`` face.

Signs and scaling: ``influencekit.convention`` (positive I_up,loss = harmful).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import DataLike, Examples
from .errors import InputError, NonFiniteError
from .losses import LossFn
from .objective import Objective
from .solvers import Solver, make_solver

#: With at most this many test vectors, "auto" scoring uses forward-mode directional derivatives
#: (k jvp passes, no per-example gradients); above it, per-layer factorised contractions
#: (``scoring.py``: Linear/Conv2d blocks without per-example gradients, vmap for any other
#: parameter), which cost 1.8x a training epoch for [100 x 60000] on the MNIST CNN against 3.4x
#: for vmap per-example gradients (BENCHMARKS.md, benchmarks/scoring/epoch_ratio.py).
JVP_MAX_VECTORS = 2


def scores(objective: Objective, S: Tensor, data: DataLike | None = None, *, method: str = "auto",
           batch_size: int | None = None, progress: bool = False, index: Tensor | None = None) -> Tensor:
    """grad L(z_i)^T s_k for every example z_i of ``data`` (default: the training data): [k, n].

    Streams ``data`` in batches: memory is one batch (per-layer activations and output
    gradients with ``"layers"``, per-example gradients [B, p] with ``"grad"``, k forward-mode
    passes with ``"jvp"``) plus the [k, n] output. ``index`` [c]: score only those rows of the
    training data, in that order ([k, c]; e.g. FastIF's candidates); they were checked when the
    objective was built, so they are not re-validated batch by batch as ``data`` is.
    """
    S = S.unsqueeze(0) if S.dim() == 1 else S
    if index is not None and data is not None:
        raise InputError("index selects rows of the training data; pass either data or index, not both.")
    ex = objective.train if data is None else Examples(data, name="scored data")
    if method == "auto":
        method = "jvp" if S.shape[0] <= JVP_MAX_VECTORS else "layers"
    if method not in ("jvp", "grad", "layers"):
        raise InputError(f"method must be 'auto', 'jvp', 'grad' or 'layers', got {method!r}.")
    S = S.to(objective.device, objective.dtype)
    if method == "layers":  # per-layer factorised contractions (scoring.py), no [B, p] gradients
        from .scoring import LayerScorer

        scorer = LayerScorer(objective, S)
    b = batch_size or objective.batch_size
    if index is None:
        count, batches = len(ex), ex.batches(b)
    else:
        index = torch.as_tensor(index, dtype=torch.long)
        count = len(index)
        batches = ((lo, *ex.take(index[lo:lo + b])) for lo in range(0, count, b))
    out = torch.empty(S.shape[0], count, dtype=objective.dtype, device=objective.device)
    for start, x, y in tqdm(batches, total=-(-count // b), disable=not progress, desc="scoring", unit="batch"):
        if data is not None:
            objective.check_batch(x, y, "scored data")
        if method == "jvp":
            block = objective.directional(S, x, y).T
        elif method == "layers":
            block = scorer(x, y)
        else:
            block = S @ objective.grads(x, y).T
        if not torch.isfinite(block).all():  # never hand back NaN scores silently
            rows = (~torch.isfinite(block)).any(0).nonzero().flatten()[:10] + start
            rows = rows if index is None else index[rows.cpu()]
            raise NonFiniteError(f"non-finite influence scores for examples {rows.tolist()}; their gradients are "
                                 "NaN/inf: check those inputs and the loss there.")
        out[:, start:start + x.shape[0]] = block
    return out


class Influence:
    """Influence of every training point on any test loss, for one trained model.

    Args:
        model: trained ``nn.Module`` in eval mode (never modified).
        loss: per-example training loss, a name (``cross_entropy``, ``logistic``, ``mse``,
            ``smooth_hinge``) or ``loss(outputs, targets) -> [B]``.
        train: training data: (X, Y) tensors, a Dataset of (x, y) or a DataLoader.
        l2: the L2 / weight-decay coefficient lambda the model was trained with.
        params: names of the parameters in scope (default: all trainable).
        solver: inverse-HVP solver name (``exact``, ``cg``, ``lissa``, ...) or a ``Solver``.
        damping: added to the Hessian's diagonal (see ``solvers.base.Solver``).
        test_loss: the loss measured on test points, if not the training loss.
        batch_size, dtype, device: see ``Objective``.
        **solver_options: passed to the solver (``tol``, ``depth``, ``scale``...).

    Results follow ``SIGN_CONVENTION`` (module docstring).
    """

    def __init__(self, model: nn.Module, loss: str | LossFn, train: DataLike, *, l2: float = 0.0,
                 params: Iterable[str] | None = None, solver: str | Solver = "cg", damping: float = 0.0,
                 test_loss: str | LossFn | None = None, batch_size: int = 512,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 **solver_options: Any):
        self.objective = Objective(model, loss, train, l2=l2, params=params, batch_size=batch_size,
                                   dtype=dtype, device=device)
        if isinstance(solver, Solver):
            self.solver = make_solver(solver, **solver_options)
        else:
            self.solver = make_solver(solver, damping=damping, **solver_options)
        from .losses import get_loss

        self.test_loss = get_loss(test_loss) if test_loss is not None else None
        self._fitted = False

    @property
    def n(self) -> int:
        return self.objective.n

    def fit(self) -> Influence:
        """Check theta_hat is (near) stationary and fit the solver's curvature. Called lazily."""
        if not self._fitted:
            loss, g = self.objective.risk(with_grad=True)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"the training objective is {loss.item()} at the trained parameters; "
                                     "influence needs a finite loss: check data, labels and the model.")
            if not torch.isfinite(g).all():
                raise NonFiniteError("the gradient of the training objective is NaN/inf at the trained parameters "
                                     "(a loss that is not differentiable there, e.g. sqrt or log at 0?); use a "
                                     "smooth loss or move the parameters off that point.")
            gnorm, tnorm = g.norm().item(), self.objective.theta.norm().item()
            self.stationarity = gnorm
            if gnorm > 1e-2 * max(1.0, tnorm) * max(self.objective.l2, 1e-3):
                warnings.warn(f"the training gradient norm is {gnorm:.2e}: theta_hat is not a stationary point "
                              "of R, so influence estimates are less reliable. Train longer or check l2 "
                              f"(now {self.objective.l2}).", stacklevel=2)
            self.solver.fit(self.objective)
            self._fitted = True
        return self

    def test_gradients(self, test: DataLike) -> Tensor:
        """grad_theta L(z_test, theta_hat) for every test point: [m, p]."""
        ex = Examples(test, name="test data")
        out = []
        for _, x, y in ex.batches(self.objective.batch_size):
            self.objective.check_batch(x, y, "test data", self.test_loss)
            out.append(self.objective.grads(x, y, self.test_loss))
        return torch.cat(out)

    def s_test(self, test: DataLike) -> Tensor:
        """s_test = (H + dI)^{-1} grad L(z_test): [m, p]."""
        G = self.test_gradients(test)  # first: bad test data fails before the (costly) curvature fit
        self.fit()
        return self.solver.solve(G)

    def up_loss(self, test: DataLike, *, method: str = "auto", progress: bool = False) -> Tensor:
        """I_up,loss(z_i, z_test_j) for all test points j and training points i: [m, n].
        Positive = harmful, negative = helpful."""
        return -scores(self.objective, self.s_test(test), method=method, progress=progress)

    def loo(self, test: DataLike, **kwargs: Any) -> Tensor:
        """Predicted change of each test loss when training point i is removed: -(1/n) up_loss, [m, n]."""
        return -self.up_loss(test, **kwargs) / self.n

    def up_params(self, index: Iterable[int] | Tensor | None = None) -> Tensor:
        """I_up,params(z_i) = -(H + dI)^{-1} grad L(z_i) for the training points in ``index``
        (default: all; memory [n, p]): [len(index), p]."""
        self.fit()
        idx = list(range(self.n)) if index is None else torch.as_tensor(list(index) if not isinstance(index, Tensor)
                                                                          else index).flatten().tolist()
        x, y = self.objective.train.take(idx)
        return -self.solver.solve(self.objective.grads(x, y))

    def self_influence(self, *, batch_size: int | None = None, progress: bool = False) -> Tensor:
        """I_up,loss(z_i, z_i) = -grad L(z_i)^T (H + dI)^{-1} grad L(z_i) for all n points: [n].

        One solve per training point (batched), so cheap solvers (exact, low-rank) suit it best.
        """
        self.fit()
        b = batch_size or self.objective.batch_size
        out = []
        for _, x, y in tqdm(self.objective.train.batches(b), total=-(-self.n // b), disable=not progress,
                            desc="self-influence", unit="batch"):
            G = self.objective.grads(x, y)
            out.append(-(G * self.solver.solve(G)).sum(1))
        return torch.cat(out)

    def loo_newton(self, test: DataLike, index: Iterable[int]) -> Tensor:
        """Predicted change of each test loss when training point i is removed, by one exact
        Newton step on the leave-one-out objective: [m, len(index)].

            theta_{-i} - theta_hat ~ (1/n) (H + dI - (1/n) grad^2 L(z_i))^{-1} grad L(z_i)

        Unlike ``loo`` it takes the removed point's own curvature out of the Hessian, which
        matters when one point carries much of it (a support vector on the margin of a
        smooth-hinge SVM, a point of high leverage). Needs the explicit Hessian [p, p] and one
        per-example Hessian and solve per index: for small p. Same sign as ``loo``.
        """
        from torch.func import hessian as func_hessian

        self.fit()
        obj = self.objective
        H = getattr(self.solver, "hessian", None)
        if H is None:
            H = obj.hessian().to(torch.float64)
        H = H + self.solver.damping * torch.eye(obj.p, dtype=H.dtype, device=H.device)
        G_test = self.test_gradients(test).to(torch.float64)
        idx = [int(i) for i in index]
        x, y = obj.cast(*obj.train.take(idx))
        single = lambda th, xi, yi: obj.losses(th, xi[None], yi[None])[0]  # noqa: E731
        out = torch.empty(G_test.shape[0], len(idx), dtype=torch.float64)
        for col in range(len(idx)):
            g = obj.grads(x[col:col + 1], y[col:col + 1])[0].to(torch.float64)
            with torch.no_grad():
                Hi = func_hessian(single)(obj.theta, x[col], y[col]).to(torch.float64)
            delta = torch.linalg.solve(H - Hi / self.n, g) / self.n
            out[:, col] = (G_test @ delta).cpu()
        return out
