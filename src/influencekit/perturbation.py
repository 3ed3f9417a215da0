"""Influence of perturbing a training input (or a continuous label) on a test loss.

Moving training input x to x + delta replaces z = (x, y) by z_delta = (x + delta, y). In the
training objective R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2 that is up-weighting
z_delta by eps = 1/n and down-weighting z by the same eps:

    theta_hat_{eps, z_delta, -z} = argmin R(theta) + eps L(z_delta, theta) - eps L(z, theta)

    d theta / d eps = -H^{-1} (grad_theta L(z_delta) - grad_theta L(z)) ~ -H^{-1} grad_x grad_theta L(z) delta

so, to first order in delta (Koh & Liang 2017, Sec. 2.2; ../shared/docs/PAPER.md),

    L(z_test, theta_hat_{z -> z_delta}) - L(z_test, theta_hat) ~ (1/n) I_pert,loss(z, z_test) . delta

    I_pert,loss(z, z_test) = -grad_x [ s_test^T grad_theta L(z, theta_hat) ],   s_test = H^{-1} grad_theta L(z_test)

a tensor shaped like x (units: test loss per unit of input, per unit of weight 1/n; signs:
``influencekit.convention``). I_pert,loss = grad_x I_up,loss(z, z_test) with theta_hat and
s_test held at their trained values. The same holds for a continuous label (``wrt="y"``:
grad_y instead of grad_x), e.g. a regression target. ``Influence.pert_loss`` is the face's way in.

Computation: the mixed Jacobian grad_x grad_theta L [dim x, p] is never formed. For each
example, the directional derivative s^T grad_theta L(z, theta) is one forward-mode jvp in theta,
and its gradient in x one reverse pass; vmap maps that over the examples of a batch, and the
training data are streamed batch by batch (memory: one batch of inputs, times k test vectors).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from .data import DataLike, Examples
from .errors import InputError, NonFiniteError
from .objective import Objective


def pert_loss(objective: Objective, s_test: Tensor, x: Tensor, y: Tensor, *, wrt: str = "x") -> Tensor:
    """I_pert,loss(z_b, z_test) for one batch of training points.

    Args:
        objective: the training objective at theta_hat (parameters in scope define s_test's p).
        s_test: H^{-1} grad L(z_test): [p] or [k, p] (k test points), e.g. ``Influence.s_test``.
        x: training inputs [B, ...] (floating).
        y: their labels [B, ...]; floating when ``wrt="y"``.
        wrt: ``"x"`` (input perturbation) or ``"y"`` (continuous label perturbation).

    Returns:
        [B, *x.shape[1:]] (or [B, *y.shape[1:]] for ``wrt="y"``) for s_test [p];
        [k, B, ...] for s_test [k, p]. Test-loss change per unit of perturbation is this / n.
    """
    if wrt not in ("x", "y"):
        raise InputError(f"wrt must be 'x' (inputs) or 'y' (continuous labels), got {wrt!r}.")
    single = s_test.dim() == 1
    S = (s_test.unsqueeze(0) if single else s_test).to(objective.device, objective.dtype)
    if S.dim() != 2 or S.shape[1] != objective.p:
        raise InputError(f"s_test must be [p] or [k, p] with p = {objective.p} (parameters in scope), "
                         f"got {tuple(s_test.shape)}.")
    x, y = objective.cast(x, y)
    target = x if wrt == "x" else y
    if not target.is_floating_point():
        what = "inputs" if wrt == "x" else "labels"
        fix = "" if wrt == "x" else " (class indices have no gradient: use wrt='x', or a regression loss)"
        raise InputError(f"perturbation influence needs floating {what}, got {target.dtype}{fix}.")
    theta = objective.theta

    def directional(xi: Tensor, yi: Tensor, s: Tensor) -> Tensor:
        # s^T grad_theta L(z_i, theta_hat) by one forward-mode pass in theta
        f = lambda th: objective.losses(th, xi.unsqueeze(0), yi.unsqueeze(0))[0]  # noqa: E731
        return jvp(f, (theta,), (s,))[1]

    d = grad(directional, argnums=0 if wrt == "x" else 1)
    per_example = vmap(d, in_dims=(0, 0, None))  # over the batch
    out = -vmap(lambda s: per_example(x, y, s))(S)  # over test vectors: [k, B, ...]
    if not torch.isfinite(out).all():
        rows = (~torch.isfinite(out)).reshape(out.shape[0], out.shape[1], -1).any(2).any(0).nonzero().flatten()
        raise NonFiniteError(f"non-finite I_pert,loss for examples {rows[:10].tolist()} of this batch; check those "
                             "inputs and whether the loss is twice differentiable there.")
    return out[0] if single else out


def iter_pert_loss(objective: Objective, s_test: Tensor, data: DataLike | None = None, *, wrt: str = "x",
                   batch_size: int | None = None) -> Iterator[tuple[int, Tensor]]:
    """Stream I_pert,loss over ``data`` (default: the training data): yields (start, block) with
    block as ``pert_loss`` returns for the batch starting at ``start``. Memory: one batch."""
    ex = objective.train if data is None else Examples(data, name="perturbed data")
    for start, x, y in ex.batches(batch_size or objective.batch_size):
        yield start, pert_loss(objective, s_test, x, y, wrt=wrt)


def pert_loss_all(objective: Objective, s_test: Tensor, data: DataLike | None = None, *, wrt: str = "x",
                  batch_size: int | None = None) -> Tensor:
    """I_pert,loss for every example of ``data`` (default: the training data): [n, ...] for
    s_test [p], [k, n, ...] for [k, p]. Holds the whole result (n times the input size);
    use ``iter_pert_loss`` to keep memory to one batch."""
    blocks = [b for _, b in iter_pert_loss(objective, s_test, data, wrt=wrt, batch_size=batch_size)]
    return torch.cat(blocks, dim=0 if s_test.dim() == 1 else 1)


def predicted_change(i_pert: Tensor, delta: Tensor, n: int) -> Tensor:
    """First-order change of the test loss when the training points' inputs move by ``delta``:
    (1/n) sum_b I_pert,loss(z_b) . delta_b. i_pert, delta: [B, ...] (same shape) -> scalar.
    Summing over points is the first-order effect of perturbing several of them at once."""
    if i_pert.shape != delta.shape:
        raise InputError(f"I_pert,loss {tuple(i_pert.shape)} and delta {tuple(delta.shape)} must have the same shape.")
    return (i_pert * delta.to(i_pert.dtype)).sum() / n
