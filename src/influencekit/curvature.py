"""Curvature diagnostics: extreme eigenvalues of the Hessian and a damping suggestion.

Lanczos with full re-orthogonalisation, using only HVPs: ``steps`` passes over the data give
good estimates of both ends of the spectrum (the Ritz values converge to the extremes first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .objective import Objective


@dataclass(frozen=True)
class Spectrum:
    """Estimated extreme eigenvalues of H (undamped) and the damping rule applied to them."""

    min_eigenvalue: float
    max_eigenvalue: float

    @property
    def suggested_damping(self) -> float:
        """0 when H is safely positive definite (lambda_min > 1e-6 lambda_max); otherwise
        -lambda_min + 1e-3 lambda_max, which lifts the spectrum above zero by a margin."""
        if self.min_eigenvalue > 1e-6 * self.max_eigenvalue:
            return 0.0
        return -self.min_eigenvalue + 1e-3 * self.max_eigenvalue


def lanczos(matvec, p: int, steps: int, dtype: torch.dtype, device, seed: int = 0) -> Tensor:
    """Ritz values (ascending) of a symmetric operator after ``steps`` Lanczos iterations."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(p, generator=g, dtype=torch.float64).to(device, dtype)
    q = q / q.norm()
    Q = [q]
    alphas, betas = [], []
    for j in range(min(steps, p)):
        w = matvec(Q[-1])
        a = w.dot(Q[-1])
        w = w - a * Q[-1] - (betas[-1] * Q[-2] if betas else 0)
        basis = torch.stack(Q)
        w = w - basis.T @ (basis @ w)  # full re-orthogonalisation: keeps Ritz values honest
        alphas.append(a.item())
        b = w.norm()
        if b.item() < 1e-10 * abs(alphas[0]) or j == min(steps, p) - 1:
            break
        betas.append(b.item())
        Q.append(w / b)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(T)


def spectrum(objective: Objective, steps: int = 30, seed: int = 0) -> Spectrum:
    """Estimate lambda_min and lambda_max of H = grad^2 R(theta_hat) with ``steps`` HVP passes."""
    ritz = lanczos(objective.hvp, objective.p, steps, objective.dtype, objective.device, seed)
    return Spectrum(min_eigenvalue=ritz[0].item(), max_eigenvalue=ritz[-1].item())


def suggest_damping(objective: Objective, steps: int = 30) -> float:
    """A damping d that makes H + dI positive definite (see ``Spectrum.suggested_damping``)."""
    return spectrum(objective, steps).suggested_damping
