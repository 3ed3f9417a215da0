"""The one interface every inverse-HVP solver implements, and the registry that names them.

A solver approximates (H + d I)^{-1} V for the Hessian H of an ``Objective`` and damping d.
It is fitted once (``fit``: whatever curvature it needs) and then solves for any number of
right-hand sides (``solve``: V [k, p] -> [k, p]). ``needs`` declares what the solver uses of
the objective, so that an objective that cannot serve it refuses the solver up front
(``scale.distributed``: a sharded objective has no mini-batch HVPs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import InputError, NonFiniteError
from ..objective import Objective


class Solver(ABC):
    """Base class: validates inputs in ``solve`` and leaves the mathematics to ``_solve``.

    Args:
        damping: d >= 0 added to the Hessian's diagonal. Default 0: right for a model that is
            convex at theta_hat with l2 > 0 (logistic regression, linear SVM). For a
            non-convex model (a network), start at 0.01 (Koh & Liang's CNN) or use
            ``curvature.suggest_damping``; solvers that meet negative curvature raise
            ``NegativeCurvatureError`` with a suggested value.
    """

    name: ClassVar[str]
    #: what the solver reads from the objective: "hvp" (full-data HVPs), "hessian" (explicit
    #: p x p matrix), "minibatch_hvp" (stochastic HVPs), "layers" (per-layer activations),
    #: "grads" (per-example gradients). Checked against what an objective serves
    #: (``scale.distributed.ShardedInfluence``).
    needs: ClassVar[frozenset[str]] = frozenset({"hvp"})
    #: whether ``damping=None`` (a per-block automatic damping) is accepted.
    automatic_damping: ClassVar[bool] = False

    def __init__(self, damping: float = 0.0):
        if damping is None:
            auto = sorted(k for k, c in SOLVERS.items() if c.automatic_damping)
            raise InputError(f"damping=None (automatic, per block) is offered by {auto}; {self.name!r} needs a "
                             "number >= 0: e.g. 0.01, or ik.suggest_damping(objective).")
        if not damping >= 0:
            raise InputError(f"damping must be >= 0, got {damping}.")
        self.damping = float(damping)
        self.objective: Objective | None = None

    def fit(self, objective: Objective) -> Solver:
        """Prepare whatever curvature the solver needs; returns self."""
        self.objective = objective
        self._fit(objective)
        return self

    def _fit(self, objective: Objective) -> None:  # noqa: B027 - optional hook
        """Override to precompute curvature (factorisations, eigenvectors)."""

    def solve(self, V: Tensor) -> Tensor:
        """(H + d I)^{-1} V. V: [k, p] or [p]; returns the same shape, objective dtype."""
        if self.objective is None:
            raise InputError(f"{type(self).__name__} is not fitted; call fit(objective) first.")
        single = V.dim() == 1
        V = V.unsqueeze(0) if single else V
        p = self.objective.p
        if V.dim() != 2 or V.shape[1] != p:
            raise InputError(f"right-hand sides must be [k, {p}] (p = parameters in scope), got {tuple(V.shape)}.")
        if not torch.isfinite(V).all():
            raise NonFiniteError("right-hand side contains NaN or inf; check the test gradients.")
        X = self._solve(V.to(self.objective.device, self.objective.dtype))
        if not torch.isfinite(X).all():
            raise NonFiniteError(f"{self.name} produced NaN/inf; increase damping (now {self.damping}).")
        return X[0] if single else X

    @abstractmethod
    def _solve(self, V: Tensor) -> Tensor:
        """(H + d I)^{-1} V for V [k, p]."""

    def settings(self) -> dict[str, Any]:
        """The solver's settings as JSON-able values (saved next to results)."""
        return {"solver": self.name, "damping": self.damping}


SOLVERS: dict[str, type[Solver]] = {}


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator: make a solver available by its ``name``."""
    SOLVERS[cls.name] = cls
    return cls


def make_solver(name: str | Solver, **options: Any) -> Solver:
    """A solver by name (``exact``, ``cg``, ``lissa``, ...) with its options, or as given."""
    if isinstance(name, Solver):
        if options:
            raise InputError("pass options to the solver's constructor, not alongside a solver instance.")
        return name
    try:
        cls = SOLVERS[name]
    except KeyError:
        raise InputError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}.") from None
    try:
        return cls(**options)
    except TypeError as e:
        raise InputError(f"bad option for solver {name!r}: {e}") from None
