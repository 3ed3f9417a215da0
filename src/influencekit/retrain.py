"""Retraining to a stationary point: the ground truth influence is checked against.

``minimize`` re-optimises the weighted objective

    R_w(theta) = (1/n) sum_i w_i L(z_i, theta) + (l2/2) ||theta||^2

by full-batch L-BFGS from a warm start. Removing z_i is w_i = 0 (the eps = -1/n of the
influence derivation, with the 1/n and l2 of the original objective kept), and up-weighting
by eps is w_i = 1 + n eps. ``loo_retrain`` measures the actual change in test loss.

``descend`` is the other protocol, for networks whose leave-one-out optimum is not a local
quantity: a fixed number of full-batch gradient steps from the warm start (Koh & Liang
retrained their CNN for a fixed number of steps from theta_hat). Plain gradient descent has no
line search, so its result does not jump with round-off the way L-BFGS's can.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import DataLike, Examples
from .errors import ConvergenceWarning, InputError
from .losses import LossFn
from .objective import Objective

if TYPE_CHECKING:
    from .influence import Influence


def weighted_risk(objective: Objective, theta: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """R_w(theta) (scalar) and its gradient [p]: ``objective.risk`` with per-example weights [n]."""
    return objective.risk(theta, with_grad=True, weights=weights)


def weighted_hvp(objective: Objective, V: Tensor, weights: Tensor | None = None) -> Tensor:
    """grad^2 R_w(theta_hat) V for V [k, p]: the Hessian of the weighted objective."""
    return objective.hvp(V, weights=weights)


def minimize(objective: Objective, weights: Tensor | None = None, theta0: Tensor | None = None, *,
             grad_tol: float = 1e-9, max_iter: int = 2000, history: int = 50, newton_steps: int = 0) -> Tensor:
    """argmin_theta R_w(theta) by full-batch L-BFGS (strong Wolfe) from ``theta0`` (default:
    the trained parameters). Returns theta [p]. Warns if max|grad| > grad_tol at the end.

    L-BFGS stalls near max|grad| ~ 1e-9 in float64 (its line search sees no change in the loss);
    ``newton_steps`` Newton iterations (CG on the weighted Hessian) then reach round-off, which
    finite-difference checks of I_up,params need. Each costs a CG solve: for small p only.

    For a convex objective this is the global minimiser; for a network, the stationary point
    reached from the warm start (the local basin influence linearises).
    """
    theta0 = objective.theta if theta0 is None else theta0
    theta = lbfgs(lambda t: weighted_risk(objective, t, weights), theta0, grad_tol=grad_tol, max_iter=max_iter,
                  history=history)
    theta = newton(objective, theta, weights, steps=newton_steps)
    _, g = weighted_risk(objective, theta, weights)
    gmax = g.abs().max().item()
    if gmax > 10 * grad_tol:
        warnings.warn(ConvergenceWarning(f"retraining stopped with max|grad| = {gmax:.2e} > {grad_tol:.1e}; "
                                         "raise max_iter or use float64."), stacklevel=2)
    return theta


def lbfgs(risk: Callable[[Tensor], tuple[Tensor, Tensor]], theta0: Tensor, *, grad_tol: float = 1e-9,
          max_iter: int = 2000, history: int = 50) -> Tensor:
    """argmin of a smooth ``risk(theta) -> (value, gradient [p])`` by full-batch L-BFGS with a strong
    Wolfe line search from ``theta0`` [p]; stops at max|grad| <= ``grad_tol`` or after ``max_iter``
    iterations (the caller judges the final gradient). Returns theta [p]."""
    theta = theta0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=grad_tol,
                            tolerance_change=1e-16 if theta.dtype == torch.float64 else 1e-10,
                            history_size=history, line_search_fn="strong_wolfe")

    def closure():
        val, g = risk(theta.detach())
        theta.grad = g
        return val

    opt.step(closure)
    return theta.detach()


def newton(objective: Objective, theta: Tensor | None = None, weights: Tensor | None = None, *,
           steps: int = 1) -> Tensor:
    """``steps`` iterations theta <- theta - H_w^-1 grad R_w(theta) (CG to round-off), with H_w
    the weighted Hessian at ``objective.theta`` (one Hessian for every step: converges while
    theta stays near the trained parameters). Returns theta [p] (default start: the trained
    parameters)."""
    from .solvers.cg import CGSolver

    theta = (objective.theta if theta is None else theta).detach().clone()
    cg = CGSolver(tol=1e-13, max_iter=10 * objective.p,  # one Hessian, so one solver for every step
                  operator=lambda P: weighted_hvp(objective, P, weights)).fit(objective)
    for _ in range(steps):
        _, g = weighted_risk(objective, theta, weights)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # round-off floor; callers judge the gradient
            theta = theta - cg.solve(g)
    return theta


def step_size(objective: Objective) -> float:
    """1 / lambda_max(H) at the trained parameters (Lanczos): the gradient-descent step that
    cannot overshoot along any eigen-direction of a locally quadratic objective."""
    from .curvature import spectrum

    return 1.0 / spectrum(objective).max_eigenvalue


def descend(objective: Objective, weights: Tensor | None = None, theta0: Tensor | None = None, *,
            steps: int, lr: float | None = None) -> Tensor:
    """``steps`` steps of full-batch gradient descent on R_w from ``theta0`` (default: the
    trained parameters), step size ``lr`` (default 1 / lambda_max(H) at the trained
    parameters, estimated by Lanczos). Returns theta [p].

    On an eigen-direction of H with eigenvalue lambda, N steps of size lr cover the fraction
    1 - (1 - lr lambda)^N ~ 1 - exp(-lr lambda N) of the way to the local optimum; influence with
    damping d covers lambda / (lambda + d). Both are one half at lambda = d when
    lr N d = ln 2: the step count that matches a damping.
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}.")
    lr = step_size(objective) if lr is None else lr
    theta = (objective.theta if theta0 is None else theta0).detach().clone()
    for _ in range(steps):
        theta = theta - lr * weighted_risk(objective, theta, weights)[1]
    return theta


def evaluate_losses(objective: Objective, theta: Tensor, test: Examples, loss: LossFn | None = None) -> Tensor:
    """L(z_test, theta) for every test point: [m]."""
    out = []
    for _, x, y in test.batches(objective.batch_size):
        x, y = objective.cast(x, y)
        with torch.no_grad():
            out.append(objective.losses(theta, x, y, loss))
    return torch.cat(out)


def loo_retrain(influence: Influence | Objective, remove: Iterable[int], test: DataLike, *,
                test_loss: LossFn | None = None, progress: bool = False, steps: int | None = None,
                lr: float | None = None, **minimize_options) -> Tensor:
    """Actual change of each test loss when each training point in ``remove`` is left out:
    L(z_test, theta_{-i}) - L(z_test, theta_ref), shape [m, len(remove)].

    ``influence``: the ``Influence`` whose prediction is checked (its training objective, and its
    test loss unless ``test_loss`` is given), or an ``Objective``.

    theta_ref is the full objective re-optimised with the same optimiser and tolerance, so
    optimisation error cancels in the difference; each theta_{-i} is warm-started from it.
    With ``steps``, every retrain is instead ``descend(..., steps=steps, lr=lr)`` from the
    trained parameters (one step size for all; default 1 / lambda_max of the full objective's
    H). Compare with ``Influence.loo`` (``influencekit.convention``).
    """
    if isinstance(influence, Objective):
        objective = influence
    elif isinstance(getattr(influence, "objective", None), Objective):  # the Influence face (not imported: core)
        objective = influence.objective
        test_loss = test_loss if test_loss is not None else influence.test_loss
    else:
        raise InputError(f"loo_retrain takes an Influence (or an Objective), got {type(influence).__name__}.")
    remove = [int(i) for i in remove]
    n = objective.n
    if n < 2:
        # influence on one point is defined (H is that point's Hessian plus l2 I), but removing it
        # leaves no data: the "retrained" model would be argmin of the regulariser alone, not a fit
        raise InputError("leave-one-out retraining needs at least 2 training points; with n = 1 removing the "
                         "point leaves nothing to train on. Add training data, or compare Influence.up_params "
                         "with finite-difference up-weighting (retrain.minimize with weights) instead.")
    if any(i < 0 or i >= n for i in remove):
        raise InputError(f"indices to remove must be in [0, {n}); got {remove}.")
    ex = Examples(test, name="test data")
    if steps is not None:
        lr = step_size(objective) if lr is None else lr  # once, shared by every retrain
        retrain = lambda w, t0: descend(objective, w, t0, steps=steps, lr=lr)  # noqa: E731
    else:
        retrain = lambda w, t0: minimize(objective, w, t0, **minimize_options)  # noqa: E731
    theta_ref = retrain(None, None)
    base = evaluate_losses(objective, theta_ref, ex, test_loss)
    out = torch.empty(len(base), len(remove), dtype=objective.dtype)
    for col, i in enumerate(tqdm(remove, disable=not progress, desc="leave-one-out", unit="retrain")):
        w = torch.ones(n, dtype=objective.dtype, device=objective.device)
        w[i] = 0.0
        theta_i = retrain(w, theta_ref)
        out[:, col] = (evaluate_losses(objective, theta_i, ex, test_loss) - base).cpu()
    return out
