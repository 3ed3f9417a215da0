"""Exact inverse-HVP: explicit float64 Hessian and its eigendecomposition. For small p only
(memory p^2, time p^3), and the reference every other solver is tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import NegativeCurvatureError, NonFiniteError
from ..objective import Objective
from .base import Solver, register


@register
class ExactSolver(Solver):
    """(H + d I)^{-1} V through H + d I = Q diag(lam) Q^T, computed in float64.

    Raises ``NegativeCurvatureError`` when the damped Hessian has an eigenvalue <= ``rtol``
    times its largest, naming the damping that fixes it.
    """

    name = "exact"
    needs = frozenset({"hessian"})

    def __init__(self, damping: float = 0.0, rtol: float = 1e-12):
        super().__init__(damping)
        self.rtol = rtol

    def _fit(self, objective: Objective) -> None:
        H = objective.hessian().to(torch.float64)
        if not torch.isfinite(H).all():
            raise NonFiniteError("the Hessian has NaN/inf entries at the trained parameters; the loss is not twice "
                                 "differentiable there: use a smooth loss (e.g. SmoothHinge) or check the model.")
        self.hessian = H
        lam, Q = torch.linalg.eigh(H + self.damping * torch.eye(H.shape[0], dtype=H.dtype, device=H.device))
        top = lam.abs().max().item()
        if lam[0].item() <= self.rtol * top:
            suggested = max(0.0, -lam[0].item()) + 1e-3 * top + self.damping
            raise NegativeCurvatureError(
                f"the damped Hessian is not positive definite: smallest eigenvalue {lam[0].item():.3e}, "
                f"largest {top:.3e}; use damping >= {suggested:.3e} (now {self.damping}).",
                min_eigenvalue=lam[0].item(), suggested_damping=suggested)
        self.eigenvalues, self.eigenvectors = lam, Q

    def _solve(self, V: Tensor) -> Tensor:
        Q = self.eigenvectors
        X = ((V.to(torch.float64) @ Q) / self.eigenvalues) @ Q.T
        return X.to(V.dtype)
