"""influencekit: which training points are responsible for a prediction, and by how much.

Influence functions (Koh & Liang 2017) for any trained PyTorch model, through one face::

    import influencekit as ik
    inf = ik.Influence(model, "cross_entropy", (X_train, y_train), l2=1e-3)
    inf.up_loss((X_test, y_test))       # [m, n]

Signs and scaling: ``influencekit.convention``. The names below are imported on first use
(PEP 562), so ``import influencekit`` (and the command line's parser) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Influence": "influence", "TopK": "influence",
    "Objective": "objective", "Examples": "data",
    "loo_retrain": "retrain", "minimize": "retrain", "descend": "retrain", "newton": "retrain",
    "SOLVERS": "solvers", "Solver": "solvers", "make_solver": "solvers",
    "SmoothHinge": "losses", "get_loss": "losses",
    "Spectrum": "curvature", "spectrum": "curvature", "suggest_damping": "curvature",
    "SIGN_CONVENTION": "convention",
    "InfluenceError": "errors", "InputError": "errors", "NonFiniteError": "errors", "ModelStateError": "errors",
    "NegativeCurvatureError": "errors", "DivergenceError": "errors", "UnsupportedLayerError": "errors",
    "CacheError": "errors", "ConvergenceWarning": "errors",
}
__all__ = [  # the keys of _PUBLIC, spelled out for static tools
    "SIGN_CONVENTION", "SOLVERS", "CacheError", "ConvergenceWarning", "DivergenceError", "Examples", "Influence",
    "InfluenceError", "InputError", "ModelStateError", "NegativeCurvatureError", "NonFiniteError", "Objective",
    "SmoothHinge", "Solver", "Spectrum", "TopK", "UnsupportedLayerError", "descend", "get_loss", "loo_retrain",
    "make_solver", "minimize", "newton", "spectrum", "suggest_damping",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    else:
        try:  # a submodule: ik.capture, ik.storage, ...
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what static tools see; at run time the names come from __getattr__
    from .convention import SIGN_CONVENTION
    from .curvature import Spectrum, spectrum, suggest_damping
    from .data import Examples
    from .errors import (
        CacheError,
        ConvergenceWarning,
        DivergenceError,
        InfluenceError,
        InputError,
        ModelStateError,
        NegativeCurvatureError,
        NonFiniteError,
        UnsupportedLayerError,
    )
    from .influence import Influence, TopK
    from .losses import SmoothHinge, get_loss
    from .objective import Objective
    from .retrain import descend, loo_retrain, minimize, newton
    from .solvers import SOLVERS, Solver, make_solver
