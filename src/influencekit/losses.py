"""Per-example losses: ``loss(outputs, targets) -> [B]`` (no reduction).

Influence needs the loss of each training point separately, so every loss here returns one
value per example. A user-supplied callable with the same signature works everywhere a name
does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Multiclass log loss. outputs [B, C] logits, targets [B] class indices -> [B]."""
    return F.cross_entropy(outputs, targets.long(), reduction="none")


def _margin(outputs: Tensor, targets: Tensor) -> Tensor:
    """Signed margin y * f(x) with y in {-1, +1}; targets may be {0, 1} or {-1, +1}."""
    s = outputs.reshape(outputs.shape[0], -1)[:, 0]
    y = targets.to(s.dtype)
    y = torch.where(y > 0, torch.ones_like(y), -torch.ones_like(y))
    return y * s


def logistic(outputs: Tensor, targets: Tensor) -> Tensor:
    """Binary log loss on one logit. outputs [B] or [B, 1], targets [B] in {0,1} or {-1,+1}."""
    return F.softplus(-_margin(outputs, targets))


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """Half squared error summed over output dimensions -> [B]."""
    diff = outputs.reshape(outputs.shape[0], -1) - targets.reshape(targets.shape[0], -1).to(outputs.dtype)
    return 0.5 * (diff**2).sum(dim=1)


def hinge(outputs: Tensor, targets: Tensor) -> Tensor:
    """Hinge loss max(0, 1 - y f(x)). Not twice differentiable: use ``SmoothHinge`` for influence."""
    return torch.clamp(1.0 - _margin(outputs, targets), min=0.0)


class SmoothHinge:
    """SmoothHinge(s, t) = t * log(1 + exp((1 - s) / t)), s = y f(x) (Koh & Liang, Sec. 4.2).

    As t -> 0 it tends to the hinge max(0, 1 - s); t = 0 is the hinge itself. Twice
    differentiable for t > 0, which influence needs: the hinge's Hessian is zero almost
    everywhere and its gradient jumps at the margin.
    """

    def __init__(self, t: float = 1e-3):
        if t < 0:
            raise InputError(f"SmoothHinge temperature t must be >= 0, got {t}; use e.g. t=0.001.")
        self.t = float(t)

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        s = _margin(outputs, targets)
        if self.t == 0.0:
            return torch.clamp(1.0 - s, min=0.0)
        return self.t * F.softplus((1.0 - s) / self.t)

    def __repr__(self) -> str:
        return f"SmoothHinge(t={self.t})"


def _check_class_index(out_shape: torch.Size, targets: Tensor, name: str, offset: int) -> None:
    if len(out_shape) != 1:
        raise InputError(f"{name}: cross_entropy needs logits [B, C] from the model, got outputs shaped "
                         f"[B, {', '.join(map(str, out_shape))}]; make the model return one row of class scores "
                         "per example.")
    classes = out_shape[0]
    if targets.dim() != 1:
        raise InputError(f"{name}: cross_entropy needs class indices [B], got labels shaped {tuple(targets.shape)}; "
                         "pass integer class indices, not one-hot rows (use Y.argmax(1)).")
    if targets.is_floating_point() and not torch.equal(targets, targets.round()):
        odd = targets[targets != targets.round()][:3].tolist()
        raise InputError(f"{name}: cross_entropy needs integer class indices, got non-integer labels "
                         f"(e.g. {odd}); pass class indices 0..{classes - 1}.")
    bad = (targets < 0) | (targets >= classes)
    if bad.any():
        rows = bad.nonzero().flatten()
        raise InputError(f"{name}: labels must be class indices in [0, {classes - 1}] for a model with {classes} "
                         f"logits; rows {(rows[:10] + offset).tolist()} have {targets[rows[:3]].tolist()}. "
                         "Relabel to 0..C-1 or give the model more outputs.")


def _check_binary(out_shape: torch.Size, targets: Tensor, name: str, offset: int) -> None:
    if out_shape.numel() != 1:
        raise InputError(f"{name}: binary margin losses (logistic, hinge, smooth_hinge) need one logit per example, "
                         f"got {out_shape.numel()} outputs per example; use a model with one output, or "
                         "cross_entropy for several classes.")
    if targets.numel() != targets.shape[0]:
        raise InputError(f"{name}: binary labels must be one value per example, got labels shaped "
                         f"{tuple(targets.shape)}.")
    values = set(torch.unique(targets).tolist())
    if not (values <= {0, 1} or values <= {-1, 1}):
        raise InputError(f"{name}: binary labels must all be in {{0, 1}} or all in {{-1, +1}}, got values "
                         f"{sorted(values)[:6]}; map them to 0/1 (e.g. Y = (Y == positive_class)).")


def _check_regression(out_shape: torch.Size, targets: Tensor, name: str, offset: int) -> None:
    if out_shape.numel() != targets[0].numel():
        raise InputError(f"{name}: mse needs as many outputs per example as targets; the model gives "
                         f"{tuple(out_shape)} per example, the labels are {tuple(targets.shape[1:])}.")


def check_targets(loss: LossFn, out_shape: torch.Size, targets: Tensor, name: str = "data", offset: int = 0) -> None:
    """Raise ``InputError`` when ``targets`` [B, ...] cannot be labels of the named ``loss`` for a
    model whose output per example has shape ``out_shape`` (class index out of range, labels not
    in {0,1}/{-1,1}, outputs/labels size mismatch). A user-supplied loss is not checked. Rows
    named in the message are counted from ``offset`` (the batch's start in the data)."""
    for fn, check in _TARGET_CHECKS:
        if loss is fn or (isinstance(fn, type) and isinstance(loss, fn)):
            check(out_shape, targets, name, offset)
            return


_TARGET_CHECKS = ((cross_entropy, _check_class_index), (logistic, _check_binary), (hinge, _check_binary),
                  (SmoothHinge, _check_binary), (mse, _check_regression))

_NAMED: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "logistic": logistic,
    "mse": mse,
    "hinge": hinge,
    "smooth_hinge": SmoothHinge(1e-3),
}


def get_loss(loss: str | LossFn) -> LossFn:
    """A loss by name (``cross_entropy``, ``logistic``, ``mse``, ``hinge``, ``smooth_hinge``) or as given."""
    if callable(loss):
        return loss
    try:
        return _NAMED[loss]
    except KeyError:
        raise InputError(f"unknown loss {loss!r}; use one of {sorted(_NAMED)} or pass a callable "
                         "loss(outputs, targets) -> per-example losses [B].") from None
