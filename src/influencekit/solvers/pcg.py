"""Conjugate gradients preconditioned by EK-FAC: CG's accuracy (it solves with the true
Hessian-vector products) in far fewer iterations, because EK-FAC's (H + dI)^{-1} clusters the
spectrum of the preconditioned system. The CG iteration itself is ``CGSolver``'s."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..objective import Objective
from .base import register
from .cg import CGSolver
from .kfac import EXACT_BLOCK, ROW_BASES, EKFACSolver


@register
class PCGSolver(CGSolver):
    """CG on (H + dI) x = v with M^{-1} = a fitted EK-FAC inverse (same damping d).

    Args:
        damping, tol, max_iter, block: see ``CGSolver``.
        fisher, batch_size, exact_block, row_bases: of the EK-FAC preconditioner (see ``KFACSolver``,
            ``EKFACSolver``).

    The preconditioner needs the parameters in scope to be Linear/Conv2d/Embedding layers or modules
    of at most ``exact_block`` parameters (``UnsupportedLayerError`` otherwise: use ``cg``).
    After ``solve``: ``residuals``, ``iterations`` as for CG; ``preconditioner_solver`` is the
    fitted EK-FAC.
    """

    name = "pcg"
    needs = frozenset({"hvp", "layers"})

    def __init__(self, damping: float = 0.0, tol: float = 1e-6, max_iter: int | None = None,
                 fisher: str = "ggn", batch_size: int | None = None, block: bool = True,
                 exact_block: int = EXACT_BLOCK, row_bases: int = ROW_BASES):
        super().__init__(damping, tol=tol, max_iter=max_iter, block=block)
        self.preconditioner_solver = EKFACSolver(damping=damping, fisher=fisher, batch_size=batch_size,
                                                 exact_block=exact_block, row_bases=row_bases)

    def _fit(self, objective: Objective) -> None:
        ek = self.preconditioner_solver.fit(objective)
        self.preconditioner = self._precondition
        self._ek = ek

    def _precondition(self, R: Tensor) -> Tensor:
        return self._ek._solve(R)  # R is already validated [k, p] in the objective's dtype

    def settings(self) -> dict[str, Any]:
        ek = self.preconditioner_solver
        return {"solver": self.name, "damping": self.damping, "tol": self.tol, "max_iter": self.max_iter,
                "block": self.block, "fisher": ek.fisher, "batch_size": ek.batch_size,
                "exact_block": ek.exact_block, "row_bases": ek.row_bases}
