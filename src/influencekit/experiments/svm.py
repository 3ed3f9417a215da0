"""The hinge SVM, trained and retrained exactly: the ground truth of the SVM problems.

Influence on an SVM is taken with a smooth surrogate of the hinge (``losses.SmoothHinge``) at the
SVM's own weights; whether that predicts the SVM's leave-one-out change is checked against the
exact hinge SVM retrained without each point, computed here by an active-set solve.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..losses import get_loss

Pair = tuple[Tensor, Tensor]


def hinge_svm(Z: np.ndarray, l2: float, n: int | None = None, start: np.ndarray | None = None) -> np.ndarray:
    """The exact minimiser theta [p] of (1/n) sum_i max(0, 1 - z_i . theta) + (l2/2)||theta||^2,
    for rows z_i = y_i [x_i, 1] (or y_i x_i without a bias) of Z [m, p] (``n`` defaults to m;
    leave-one-out keeps the original n, the eps = -1/n convention).

    The objective is piecewise quadratic, so the minimiser solves a linear system once the
    points are sorted into margin > 1 (beta = 0), margin < 1 (beta = 1) and margin = 1 (beta in
    [0, 1]): l2 theta = (1/n) sum_i beta_i z_i with z_i . theta = 1 on the last set. A dual
    L-BFGS-B solve gives the starting sets (it stalls short of the optimum on this rank-deficient
    QP), then one violated KKT condition at a time is repaired until none is left; the result is
    exact to round-off. Raises RuntimeError if it is not.
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


class ExactSVM:
    """A linear hinge SVM, min (1/n) sum_i hinge(y_i theta . [x_i, 1]) + (l2/2)||theta||^2, trained
    exactly (``hinge_svm``; with ``bias`` the bias is regularised like every parameter in scope, as
    in liblinear), and its exact leave-one-out retraining.

    ``theta`` [p] (p = d + 1 with a bias): the full-data SVM. Calling it is a ``Problem.retrain``:
    removing z_i drops its row and keeps 1/n (the eps = -1/n convention); each leave-one-out solve
    starts from the full-data sets. Labels y are {0, 1}.
    """

    def __init__(self, X: Tensor, y: Tensor, l2: float, bias: bool = True):
        self.n, self.l2, self.bias = len(X), l2, bias
        self.Z = (2.0 * y.double().numpy() - 1.0)[:, None] * self._augment(X)
        self.theta = torch.as_tensor(hinge_svm(self.Z, l2))

    def _augment(self, X: Tensor) -> np.ndarray:
        X = X.double().numpy()
        return np.c_[X, np.ones(len(X))] if self.bias else X

    def without(self, i: int) -> Tensor:
        """The SVM retrained without training point i: theta_{-i} [p]."""
        keep = np.arange(self.n) != i
        return torch.as_tensor(hinge_svm(self.Z[keep], self.l2, self.n, start=self.theta.numpy()))

    def losses(self, theta: Tensor, test: Pair) -> Tensor:
        """The hinge loss of every test point at ``theta``: [m]."""
        return get_loss("hinge")(torch.as_tensor(self._augment(test[0])) @ theta, test[1])

    def __call__(self, remove: list[int], test: Pair) -> Tensor:
        """Actual change of each test point's hinge loss when each point of ``remove`` is left out:
        [m, len(remove)]."""
        base = self.losses(self.theta, test)
        return torch.stack([self.losses(self.without(i), test) - base for i in remove], 1)
