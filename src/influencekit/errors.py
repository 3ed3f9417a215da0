"""Typed errors and warnings. Every message says what the user should change."""

from __future__ import annotations


class InfluenceError(Exception):
    """Base class of every error influencekit raises on purpose."""


class InputError(InfluenceError, ValueError):
    """The model, loss or data handed in cannot be used as given (shapes, dtypes, empty data)."""


class NonFiniteError(InfluenceError, ValueError):
    """NaN or inf found in data, losses, gradients or solver iterates."""


class ModelStateError(InfluenceError, RuntimeError):
    """The model is in a state influence cannot be computed in (training mode, no grads)."""


class NegativeCurvatureError(InfluenceError, ArithmeticError):
    """The (damped) Hessian is not positive definite, so H^-1 v is not a minimiser.

    Attributes:
        min_eigenvalue: estimate of the smallest eigenvalue of the damped Hessian.
        suggested_damping: a damping that would make the Hessian positive definite.
    """

    def __init__(self, message: str, min_eigenvalue: float, suggested_damping: float):
        super().__init__(message)
        self.min_eigenvalue = min_eigenvalue
        self.suggested_damping = suggested_damping


class DivergenceError(InfluenceError, ArithmeticError):
    """An iterative solver (LiSSA) blew up; the message names the setting to change."""


class UnsupportedLayerError(InfluenceError, TypeError):
    """A curvature method met a layer type it has no factorisation for."""


class CacheError(InfluenceError, RuntimeError):
    """A cache on disk is corrupt, truncated, or was made with other settings or another model."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance; residuals are attached."""
