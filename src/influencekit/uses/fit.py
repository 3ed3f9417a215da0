"""Convex models fitted to a stationary point, the setting influence linearises around."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..errors import ConvergenceWarning
from ..models import LogisticRegression
from ..objective import Objective
from ..retrain import minimize, weighted_risk


def linear_model(d: int, classes: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Logistic regression (one logit, loss ``logistic``) for 2 classes, else multinomial
    (``nn.Linear(d, classes)``, loss ``cross_entropy``). Zero-initialised: the fit is convex."""
    model = LogisticRegression(d) if classes == 2 else nn.Linear(d, classes)
    for p in model.parameters():
        nn.init.zeros_(p)
    return model.to(dtype).eval()


def loss_name(classes: int) -> str:
    """The training loss matching ``linear_model(d, classes)``."""
    return "logistic" if classes == 2 else "cross_entropy"


def fit_linear(X: Tensor, y: Tensor, l2: float, classes: int | None = None, *, init: nn.Module | None = None,
               max_iter: int = 1000) -> nn.Module:
    """argmin (1/n) sum L + (l2/2)||theta||^2 of a linear model on (X [n, d], y [n]).

    L-BFGS from ``init``'s parameters (a model of the same shape; default zeros), then, for
    p <= 300, Newton steps with the explicit Hessian until max|grad| < 1e-10 (weakly regularised
    fits stall in L-BFGS long before that).
    """
    classes = int(y.max()) + 1 if classes is None else classes
    classes = max(classes, 2)
    model = linear_model(X.shape[1], classes, X.dtype) if init is None else init
    obj = Objective(model, loss_name(classes), (X, y), l2=l2, batch_size=4096)
    small = obj.p <= 300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # judged below
        theta = minimize(obj, grad_tol=1e-8, max_iter=200 if small else max_iter)
    _, g = weighted_risk(obj, theta)
    for _ in range(5 if small else 0):
        if g.abs().max() < 1e-10:
            break
        H = Objective(obj.to_model(theta), obj.loss_fn, (X, y), l2=l2, batch_size=4096).hessian()
        theta = theta - torch.linalg.solve(H, g)
        _, g = weighted_risk(obj, theta)
    if g.abs().max() > 1e-6:
        warnings.warn(ConvergenceWarning(f"linear fit stopped with max|grad| = {g.abs().max():.1e}; influence "
                                         "assumes a stationary point: raise max_iter or l2."), stacklevel=2)
    return obj.to_model(theta).eval()


def predict(model: nn.Module, X: Tensor) -> Tensor:
    """Class predictions [n] of a model from ``linear_model`` (or any logits model)."""
    with torch.no_grad():
        out = model(X)
    return (out > 0).long() if out.dim() == 1 else out.argmax(1)


def accuracy(model: nn.Module, X: Tensor, y: Tensor) -> float:
    """Fraction of (X, y) the model classifies correctly."""
    return float((predict(model, X) == y).double().mean())
