"""Inverse-HVP solvers, chosen by name: ``make_solver("cg", damping=0.01)``.

Importing a solver module registers it; a new solver is one ``Solver`` subclass.
"""

from . import arnoldi, cg, datainf, exact, kfac, lissa, pcg  # noqa: F401  (registration)
from .base import SOLVERS, Solver, make_solver, register

__all__ = ["SOLVERS", "Solver", "make_solver", "register"]
