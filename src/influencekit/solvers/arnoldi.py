"""Low-rank inverse-HVP from the top eigenpairs of H (Arnoldi/Lanczos; Schioppa et al. 2022).

A Krylov basis Q [m, p] of H is built from HVPs, ``block`` directions at a time (one batched
data pass per block), with full re-orthogonalisation; the Rayleigh-Ritz step diagonalises
Q H Q^T and keeps the r Ritz pairs of largest |eigenvalue| (U [r, p], lam [r]). Then

    (H + dI)^{-1} V  ~  ((V U^T) / (lam + d)) U

i.e. the inverse on the top-r subspace, and 0 on its complement (Schioppa et al. project the
gradients onto the subspace, which also suppresses the noisy small-curvature directions). With
r = p this is the exact inverse. Cost of ``fit``: ceil(m / block) + 1 HVP passes; memory 2 m p.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, NegativeCurvatureError
from ..objective import Objective
from .base import Solver, register


@register
class ArnoldiSolver(Solver):
    """Top-r eigen-decomposition of H by block Lanczos with full re-orthogonalisation.

    Args:
        damping: see ``Solver``; added to the kept eigenvalues.
        rank: r, eigenpairs kept (capped at p).
        krylov: m, size of the Krylov space (default min(p, 2 r + 10)); larger m, more
            accurate top eigenpairs.
        block: directions per HVP pass (batched through vmap; larger is faster per vector).
        seed: for the random start block.

    After ``fit``: ``eigenvalues`` [r] (of H, undamped) and ``eigenvectors`` [r, p]. A kept
    eigenvalue with lam + d <= 0 raises ``NegativeCurvatureError`` with the damping that fixes it.
    """

    name = "arnoldi"
    needs = frozenset({"hvp"})

    def __init__(self, damping: float = 0.0, rank: int = 50, krylov: int | None = None, block: int = 10,
                 seed: int = 0):
        super().__init__(damping)
        if rank < 1 or block < 1 or (krylov is not None and krylov < rank):
            raise InputError(f"need rank >= 1, block >= 1 and krylov >= rank; got rank={rank}, block={block}, "
                             f"krylov={krylov}.")
        self.rank, self.krylov, self.block, self.seed = rank, krylov, block, seed

    def _fit(self, objective: Objective) -> None:
        p = objective.p
        r = min(self.rank, p)
        m = min(p, self.krylov or 2 * r + 10)
        g = torch.Generator().manual_seed(self.seed)
        dtype, dev = objective.dtype, objective.device

        def fresh(k: int) -> Tensor:
            return torch.randn(k, p, generator=g, dtype=torch.float64).to(dev, dtype)

        Q = torch.empty(0, p, dtype=dtype, device=dev)
        HQ = torch.empty(0, p, dtype=dtype, device=dev)
        nxt = fresh(min(self.block, m))
        for _ in range(math.ceil(m / self.block) + 1):
            nxt = _orthonormalise(nxt[: m - Q.shape[0]], Q, fresh)
            if nxt.shape[0] == 0:
                break
            Q = torch.cat([Q, nxt])
            W = objective.hvp(nxt)
            HQ = torch.cat([HQ, W])
            nxt = W
        T = Q @ HQ.T
        lam, Z = torch.linalg.eigh(0.5 * (T + T.T))
        keep = lam.abs().argsort(descending=True)[:r]
        self.eigenvalues = lam[keep]
        self.eigenvectors = Z[:, keep].T @ Q
        low = (self.eigenvalues + self.damping).min().item()
        if low <= 0:
            suggested = self.damping - low + 1e-3 * self.eigenvalues.abs().max().item()
            raise NegativeCurvatureError(
                f"arnoldi: a kept eigenvalue of H + dI is {low:.3e} <= 0 (H is not positive definite on the top-"
                f"{r} subspace); use damping >= {suggested:.3e} (now {self.damping}).",
                min_eigenvalue=low, suggested_damping=suggested)

    def _solve(self, V: Tensor) -> Tensor:
        U = self.eigenvectors
        return ((V @ U.T) / (self.eigenvalues + self.damping)) @ U

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "rank": self.rank, "krylov": self.krylov, "block": self.block,
                "seed": self.seed}


def _orthonormalise(W: Tensor, Q: Tensor, fresh) -> Tensor:
    """Rows of W made orthonormal to each other and to the rows of Q (twice, for stability);
    rows that vanish (an invariant subspace was reached) are replaced by fresh random ones."""
    if W.shape[0] == 0:
        return W
    for _ in range(2):
        if Q.shape[0]:
            W = W - (W @ Q.T) @ Q
        scale = W.norm(dim=1, keepdim=True)
    for _ in range(3):
        q, rr = torch.linalg.qr(W.T)
        ok = rr.diagonal().abs() > 1e-8 * scale.max().clamp_min(1e-300)
        if ok.all():
            out = q.T
            if Q.shape[0]:
                out = out - (out @ Q.T) @ Q  # one more pass after QR's own round-off
                out = out / out.norm(dim=1, keepdim=True)
            return out
        W = torch.cat([W[ok], fresh(int((~ok).sum()))])
        if Q.shape[0]:
            W = W - (W @ Q.T) @ Q
        scale = W.norm(dim=1, keepdim=True)
    return W[:0]  # the whole space is spanned
