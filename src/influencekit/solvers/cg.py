"""Conjugate gradients on  min_x 1/2 x^T (H + dI) x - v^T x, batched over k right-hand sides.

Each iteration is one pass over the training data that applies the Hessian to all k
directions at once (reverse-over-reverse HVPs, ``Objective.hvp_batch``), so k test points
cost little more than one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ConvergenceWarning, NegativeCurvatureError, NonFiniteError
from .base import Solver, register


@register
class CGSolver(Solver):
    """Batched (optionally preconditioned) conjugate gradients.

    Args:
        damping: see ``Solver``.
        tol: stop a column when ||r|| <= tol * ||v|| (relative residual).
        max_iter: at most this many iterations (data passes); default min(p, 1000).
        preconditioner: optional callable M^{-1}: [k, p] -> [k, p], symmetric positive
            definite (e.g. a fitted EK-FAC solver's ``solve``); fewer iterations when M ~ H.
        operator: optional callable A: [k, p] -> [k, p], symmetric, to invert instead of the
            objective's H + dI (e.g. a reweighted Hessian for a Newton step in ``retrain``).
        block: with k > 1 right-hand sides, block CG (O'Leary 1980; made rank-revealing as in
            Ji & Li 2017): the k columns share one Krylov space, so each iteration's k HVPs
            serve every column. Same HVPs per iteration, fewer iterations (measured on the
            benchmark networks). Extra cost O(k^2 p) per iteration.
            ``block=False``: k independent CG recurrences (each column as if alone).

    After ``solve``, ``residuals`` holds the relative residual of every column at every
    iteration ([iters, k]) and ``iterations`` the count. Not converging warns
    (``ConvergenceWarning``) with the worst residual; meeting a direction of non-positive
    curvature raises ``NegativeCurvatureError`` with its Rayleigh quotient.
    """

    name = "cg"
    needs = frozenset({"hvp"})

    def __init__(self, damping: float = 0.0, tol: float = 1e-6, max_iter: int | None = None,
                 preconditioner: Callable[[Tensor], Tensor] | None = None,
                 operator: Callable[[Tensor], Tensor] | None = None, block: bool = True):
        super().__init__(damping)
        self.tol, self.max_iter, self.preconditioner, self.operator = tol, max_iter, preconditioner, operator
        self.block = block
        self.residuals: Tensor | None = None
        self.iterations = 0

    def _apply(self, P: Tensor) -> Tensor:
        if self.operator is not None:
            return self.operator(P)
        return self.objective.hvp(P) + self.damping * P

    def _solve(self, V: Tensor) -> Tensor:
        if self.block and V.shape[0] > 1:
            return self._solve_block(V)
        M = self.preconditioner or (lambda r: r)
        bnorm = V.norm(dim=1)
        active = bnorm > 0
        X = torch.zeros_like(V)
        R = V.clone()
        Z = M(R)
        P = Z.clone()
        rz = (R * Z).sum(1)
        history = []
        max_iter = self.max_iter or min(self.objective.p, 1000)
        for it in range(max_iter):
            rel = R.norm(dim=1) / bnorm.clamp_min(torch.finfo(V.dtype).tiny)
            history.append(rel)
            active = active & (rel > self.tol)
            if not active.any():
                break
            AP = self._apply(P)
            pAp = (P * AP).sum(1)
            self._check_finite(pAp[active], it)
            bad = active & (pAp <= 0)
            if bad.any():
                self._negative_curvature((pAp[bad] / (P[bad] * P[bad]).sum(1)).min().item(), it)
            alpha = torch.where(active, rz / pAp.where(active, torch.ones_like(pAp)), torch.zeros_like(rz))
            X = X + alpha[:, None] * P
            R = R - alpha[:, None] * AP
            Z = M(R)
            rz_new = (R * Z).sum(1)
            beta = torch.where(active, rz_new / rz.where(active, torch.ones_like(rz)), torch.zeros_like(rz))
            P = Z + beta[:, None] * P
            rz = rz_new
        else:
            history.append(R.norm(dim=1) / bnorm.clamp_min(torch.finfo(V.dtype).tiny))
        return self._finish(X, history)

    def _solve_block(self, V: Tensor) -> Tensor:
        """Block CG on the k columns at once. Each iteration: the (preconditioned) residuals of
        the unconverged columns, A-orthogonalised against the last search block, give an
        orthonormal basis Q (an SVD drops directions that are numerically dependent, which is
        what keeps block CG from breaking down as columns converge); the search block is
        P = L^{-1} Q with L L^T = Q A Q^T, so that P A P^T = I and the step is X += (R P^T) P."""
        M = self.preconditioner or (lambda r: r)
        bnorm = V.norm(dim=1).clamp_min(torch.finfo(V.dtype).tiny)
        X, R = torch.zeros_like(V), V.clone()
        P = AP = None
        history = []
        max_iter = self.max_iter or min(self.objective.p, 1000)
        for it in range(max_iter + 1):
            rel = R.norm(dim=1) / bnorm
            history.append(rel)
            active = rel > self.tol  # a zero column has rel 0 and its zero solution
            if not active.any() or it == max_iter:
                break
            Z = M(R[active])
            if P is not None:
                Z = Z - (Z @ AP.T) @ P  # A-orthogonal to the last search block (P A P^T = I)
            Z = Z / Z.norm(dim=1, keepdim=True).clamp_min(torch.finfo(V.dtype).tiny)  # columns of any scale count
            _, S, Q = torch.linalg.svd(Z, full_matrices=False)
            Q = Q[S > S[0] * 1e3 * torch.finfo(V.dtype).eps]
            AQ = self._apply(Q)
            self._check_finite(AQ, it)
            QAQ = Q @ AQ.T
            L, info = torch.linalg.cholesky_ex(0.5 * (QAQ + QAQ.T))
            if info.item() != 0:  # Q A Q^T not positive definite: its smallest Ritz value is the Rayleigh quotient
                self._negative_curvature(torch.linalg.eigvalsh(0.5 * (QAQ + QAQ.T))[0].item(), it)
            P = torch.linalg.solve_triangular(L, Q, upper=False)
            AP = torch.linalg.solve_triangular(L, AQ, upper=False)
            alpha = R @ P.T  # [k, r]: the energy-minimising step in span(P) for every column
            X = X + alpha @ P
            R = R - alpha @ AP
        return self._finish(X, history)

    def _finish(self, X: Tensor, history: list[Tensor]) -> Tensor:
        self.residuals = torch.stack(history)
        self.iterations = len(history) - 1
        worst = self.residuals[-1].max().item()
        if worst > self.tol:
            warnings.warn(ConvergenceWarning(
                f"CG stopped after {self.iterations} iteration{'s' * (self.iterations != 1)} with relative "
                f"residual {worst:.2e} > tol "
                f"{self.tol:.1e}; raise max_iter, add damping, or use float64 (residuals: solver.residuals)."),
                stacklevel=4)
        return X

    @staticmethod
    def _check_finite(products: Tensor, it: int) -> None:
        if not torch.isfinite(products).all():
            raise NonFiniteError(f"CG got a NaN/inf Hessian-vector product at iteration {it}; the loss is not "
                                 "twice differentiable at theta_hat or the model overflows: check the model "
                                 "and loss, or use float64.")

    def _negative_curvature(self, rq: float, it: int) -> None:
        """Raise NegativeCurvatureError for a Rayleigh quotient rq <= 0 of the damped Hessian."""
        # a Rayleigh quotient only bounds lambda_min from above, so damping by -rq alone may
        # not suffice; a Lanczos estimate of the spectrum (only on this failure path) does
        from ..curvature import lanczos

        obj = self.objective
        ritz = lanczos(lambda v: self._apply(v[None])[0], obj.p, 30, obj.dtype, obj.device)
        lo, hi = min(rq, ritz[0].item()), ritz[-1].item()  # of the damped Hessian
        suggested = max(self.damping - rq + 1e-3 * max(abs(rq), 1.0), self.damping - lo + 1e-3 * hi)
        raise NegativeCurvatureError(
            f"CG met non-positive curvature (Rayleigh quotient {rq:.3e} of the damped Hessian) at "
            f"iteration {it}; the Hessian is not positive definite (Lanczos estimate of the damped "
            f"Hessian's smallest eigenvalue: {lo:.3e}, largest {hi:.3e}). Use damping >= "
            f"{suggested:.3e} (now {self.damping}).", min_eigenvalue=lo, suggested_damping=suggested)

    def settings(self) -> dict:
        return {**super().settings(), "tol": self.tol, "max_iter": self.max_iter, "block": self.block,
                "preconditioned": self.preconditioner is not None}
