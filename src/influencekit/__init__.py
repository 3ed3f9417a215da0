"""influencekit: which training points are responsible for a prediction, and by how much.

Influence functions (Koh & Liang 2017) for any trained PyTorch model. Sign convention: see
``influencekit.influence`` (positive I_up,loss = harmful; loo = -(1/n) I_up,loss).
"""

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
from .influence import Influence, scores
from .losses import SmoothHinge, get_loss
from .objective import Objective
from .retrain import descend, loo_retrain, minimize, newton
from .solvers import SOLVERS, Solver, make_solver

__version__ = "0.1.0"

__all__ = [
    "SIGN_CONVENTION", "SOLVERS", "CacheError", "ConvergenceWarning", "DivergenceError", "Examples",
    "Influence", "InfluenceError", "InputError", "ModelStateError", "NegativeCurvatureError",
    "NonFiniteError", "Objective", "SmoothHinge", "Solver", "Spectrum", "UnsupportedLayerError",
    "descend", "get_loss", "loo_retrain", "make_solver", "minimize", "newton", "scores", "spectrum",
    "suggest_damping",
]
