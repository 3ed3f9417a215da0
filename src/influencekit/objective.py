"""The training objective as a function of the parameters in scope, and its derivatives.

    R(theta) = (1/n) sum_i L(z_i, theta) + (l2 / 2) ||theta||^2

theta is the flat vector [p] of the parameters in scope (all trainable ones by default, or a
named subset such as the last layer); every other parameter and buffer is held fixed at its
trained value. The user's module is never modified: it is called through
``torch.func.functional_call`` with detached copies of its tensors.

Everything here takes and returns tensors: per-example gradients [B, p], Hessian-vector
products [k, p], directional derivatives [B, k], the explicit Hessian [p, p].

Every sum over the training data (the risk and its gradient, HVPs and so the Hessian, their
weighted forms for retraining, the solvers' curvature statistics) is one loop,
``Objective.stream``, ending in one reduction hook, ``Objective.reduce``: the identity here, a
sum over processes for a sharded objective (``scale.distributed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jvp, vjp, vmap

from .data import DataLike, Examples
from .errors import InputError, ModelStateError, NonFiniteError
from .losses import LossFn, check_targets, get_loss

_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def check_eval_mode(model: nn.Module) -> None:
    """Raise if a dropout or batch-norm layer is in training mode (its output would be random
    or depend on the batch, so the loss would not be a function of one example and theta)."""
    bad = [name or type(model).__name__ for name, m in model.named_modules()
           if m.training and isinstance(m, _MODE_DEPENDENT)]
    if bad:
        raise ModelStateError(f"model has dropout/batch-norm layers in training mode ({', '.join(bad[:5])}); "
                              "call model.eval() before computing influence.")


class Objective:
    """R(theta) over the parameters in scope, streamed over the training data.

    Args:
        model: the trained module. Not modified.
        loss: per-example loss ``loss(outputs, targets) -> [B]`` or a name from ``losses``.
        train: training data (tensors (X, Y), Dataset or DataLoader); n = len(train).
        l2: the coefficient lambda of (lambda/2)||theta||^2 the model was trained with
            (weight decay wd in SGD corresponds to l2 = wd). It adds lambda*I to the Hessian.
        params: names of the parameters in scope (``dict(model.named_parameters())`` keys);
            default: every parameter with requires_grad.
        batch_size: examples per streamed batch; memory is bounded by it, not by n.
        dtype: floating dtype of all computation (torch.float64 for exact checks); default:
            the model's.
        device: where to compute; default: the model's.
    """

    def __init__(self, model: nn.Module, loss: str | LossFn, train: DataLike, *, l2: float = 0.0,
                 params: Iterable[str] | None = None, batch_size: int = 512,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        check_eval_mode(model)
        if l2 < 0:
            raise InputError(f"l2 must be >= 0 (the weight-decay coefficient used in training), got {l2}.")
        named = dict(model.named_parameters())
        if not named:
            raise InputError("model has no parameters; influence is taken with respect to parameters.")
        if params is None:
            names = [k for k, p in named.items() if p.requires_grad]
            if not names:
                raise ModelStateError("no parameter of the model requires grad; pass params=[...] naming "
                                      "the parameters in scope, or call requires_grad_(True) on them.")
        else:
            names = list(params)
            unknown = [k for k in names if k not in named]
            if unknown:
                raise InputError(f"unknown parameter names {unknown}; the model has {list(named)[:20]}.")
            frozen = [k for k in names if not named[k].requires_grad]
            if frozen:
                raise ModelStateError(f"parameters {frozen} do not require grad; call requires_grad_(True) "
                                      "on them or leave them out of params.")
            if not names:
                raise InputError("params is empty; name at least one parameter.")
        first = named[names[0]]
        self.dtype = dtype or first.dtype
        self.device = torch.device(device) if device is not None else first.device
        if not self.dtype.is_floating_point:
            raise InputError(f"dtype must be floating point, got {self.dtype}.")
        self.model = model
        self.loss_fn: LossFn = get_loss(loss)
        self.l2 = float(l2)
        self.names = names
        self.shapes = [named[k].shape for k in names]
        self.numels = [named[k].numel() for k in names]
        self.theta = torch.cat([named[k].detach().reshape(-1) for k in names]).to(self.device, self.dtype)
        scope = set(names)
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        self.fixed = {k: self._to(v.detach()) for k, v in state.items() if k not in scope}
        self.train = Examples(train, name="training data")
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        bad = [k for k, v in {**self.unflatten(self.theta), **self.fixed}.items()
               if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteError(f"model parameters/buffers {bad[:5]} contain NaN or inf; training diverged or the "
                                 "checkpoint is broken: retrain (e.g. lower the learning rate) or reload the weights.")
        # a forward pass on a few training examples turns shape/dtype mismatches between model, loss
        # and data into InputError here, instead of a torch error deep inside vmap later
        x0, y0 = self.train.take(slice(0, min(4, self.n)))
        self.example_shape = tuple(x0.shape[1:])
        self.check_batch(x0, y0, "training data")
        if self.train.y is not None:  # labels in memory: check all of them, not only the probe
            check_targets(self.loss_fn, self.output_shape, self.train.y, "training data")

    # ---- shapes -------------------------------------------------------------------------
    @property
    def p(self) -> int:
        """Number of parameters in scope."""
        return self.theta.numel()

    @property
    def n(self) -> int:
        """Number of training points."""
        return len(self.train)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Flat [p] -> {name: tensor shaped like the parameter} (views, no copy)."""
        return {k: t.view(s) for k, t, s in zip(self.names, torch.split(theta, self.numels), self.shapes)}

    def blocks(self, rows: Tensor) -> dict[str, Tensor]:
        """Rows [k, p] -> {name: [k, numel]}: each parameter's columns, in scope order (views)."""
        return dict(zip(self.names, torch.split(rows, self.numels, dim=1)))

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        """{name: tensor} -> flat [p] in scope order."""
        return torch.cat([tensors[k].reshape(-1) for k in self.names])

    def to_model(self, theta: Tensor | None = None) -> nn.Module:
        """A deep copy of the model with ``theta`` (default: the trained values) loaded in scope."""
        import copy

        clone = copy.deepcopy(self.model)
        values = self.unflatten(self.theta if theta is None else theta)
        with torch.no_grad():
            for k, p in clone.named_parameters():
                if k in values:
                    p.copy_(values[k].to(p.dtype))
        return clone

    # ---- forward ------------------------------------------------------------------------
    def _to(self, t: Tensor) -> Tensor:
        return t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device)

    def cast(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Move a batch to the device; floating tensors to the objective's dtype."""
        return self._to(x), self._to(y)

    def outputs(self, theta: Tensor, x: Tensor) -> Tensor:
        """Model outputs at parameters theta for a batch x."""
        return functional_call(self.model, (self.unflatten(theta), self.fixed), (x,))

    def losses(self, theta: Tensor, x: Tensor, y: Tensor, loss: LossFn | None = None) -> Tensor:
        """Per-example losses L(z_b, theta): [B]."""
        out = (loss or self.loss_fn)(self.outputs(theta, x), y)
        if out.dim() != 1 or out.shape[0] != x.shape[0]:
            raise InputError(f"the loss returned shape {tuple(out.shape)} for a batch of {x.shape[0]}; it must "
                             "return one value per example (use reduction='none').")
        return out

    def check_batch(self, x: Tensor, y: Tensor, name: str = "data", loss: LossFn | None = None) -> None:
        """Raise ``InputError`` (with the shapes) when the model cannot take inputs ``x`` [B, ...] or
        the loss cannot take its outputs with labels ``y`` [B, ...]: wrong feature size, wrong
        dtype, class index out of range, labels outside {0,1}/{-1,1}. Runs the model on <= 4 rows."""
        xs, ys = self.cast(x[:4], y[:4])
        try:
            with torch.no_grad():
                out = self.outputs(self.theta, xs)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, IndexError, ValueError, TypeError) as e:
            train = "" if name == "training data" else f" (training examples are {list(self.example_shape)})"
            raise InputError(f"{name}: the model cannot take examples shaped {list(x.shape[1:])} ({x.dtype}){train}; "
                             f"make the data match the model's input (torch said: {e})") from None
        self.output_shape = out.shape[1:]
        check_targets(loss or self.loss_fn, out.shape[1:], y, name)
        try:
            with torch.no_grad():
                self.losses(self.theta, xs, ys, loss)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, IndexError) as e:
            raise InputError(f"{name}: the loss cannot take model outputs shaped {tuple(out.shape)} with labels "
                             f"shaped {tuple(y[:4].shape)}; make the labels match the loss "
                             f"(torch said: {e})") from None

    def _single(self, loss: LossFn | None) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        return lambda th, xi, yi: self.losses(th, xi.unsqueeze(0), yi.unsqueeze(0), loss)[0]

    # ---- first derivatives --------------------------------------------------------------
    def grads(self, x: Tensor, y: Tensor, loss: LossFn | None = None, theta: Tensor | None = None) -> Tensor:
        """Per-example gradients grad_theta L(z_b, theta) of a batch: [B, p] (torch.func.vmap)."""
        x, y = self.cast(x, y)
        th = self.theta if theta is None else theta
        with torch.no_grad():
            g = vmap(grad(self._single(loss)), in_dims=(None, 0, 0))(th, x, y)
        if not torch.isfinite(g).all():
            rows = (~torch.isfinite(g)).any(1).nonzero().flatten()[:10].tolist()
            raise NonFiniteError(f"non-finite gradient for examples {rows} of this batch; check those inputs, "
                                 "the loss (log of 0?) and whether the model was trained to finite parameters.")
        return g

    def directional(self, S: Tensor, x: Tensor, y: Tensor, loss: LossFn | None = None) -> Tensor:
        """Directional derivatives grad_theta L(z_b)^T s_k for all b, k: [B, k], by forward mode.

        Costs k forward-mode passes and never forms a per-example gradient, which is cheaper
        than ``grads`` when k is small relative to the per-example gradient cost.
        """
        x, y = self.cast(x, y)
        f = lambda th: self.losses(th, x, y, loss)  # noqa: E731
        with torch.no_grad():
            d = vmap(lambda s: jvp(f, (self.theta,), (s,))[1])(S.to(self.device, self.dtype))
        return d.T

    # ---- the one loop over the training data ------------------------------------------
    #: global row of this objective's first training row (non-zero on a shard, ``scale.distributed``)
    offset: int = 0

    def reduce(self, total: Tensor) -> Tensor:
        """The reduction applied to every sum over the training data, after ``stream``'s local
        loop: the identity in one process. A sharded objective sums over its ranks here, so that
        every quantity built on ``stream`` is the full-data one on every rank."""
        return total

    def stream(self, term: Callable[[Tensor, Tensor, Tensor | None], Sum], *, weights: Tensor | None = None,
               batch_size: int | None = None, check_labels: bool = False) -> Sum:
        """sum over batches b of the training data of ``term(x_b, y_b, w_b)``, then ``reduce``.

        ``term`` gets a batch cast to the objective's device and dtype and the batch's slice
        w_b [B] of ``weights`` [n] (one weight per training point, indexed by global row; None
        when no weights are given), and returns a tensor, or a tuple / list / dict of tensors,
        of the same shapes for every batch; the result has that structure. Batches of
        ``batch_size`` (default the objective's): memory is one batch, never n. With training
        data from a Dataset, the labels of every batch are checked (the constructor only
        probed a few) when ``check_labels``."""
        if weights is not None and weights.shape != (self.n,):
            raise InputError(f"weights must be one per training point, shape ({self.n},); got {tuple(weights.shape)}.")
        total = None
        for start, x, y in self.train.batches(batch_size or self.batch_size):
            if check_labels and self.train.y is None:
                check_targets(self.loss_fn, self.output_shape, y, "training data", start)
            x, y = self.cast(x, y)
            lo = self.offset + start
            w = None if weights is None else weights[lo:lo + x.shape[0]].to(self.device, self.dtype)
            part = term(x, y, w)
            total = part if total is None else _add(total, part)
        return _map(self.reduce, total)

    def risk(self, theta: Tensor | None = None, *, with_grad: bool = False,
             weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """R(theta) (scalar) and, if asked, its gradient [p]; one pass over the training data.

        ``weights`` [n]: R_w(theta) = (1/n) sum_i w_i L(z_i, theta) + (l2/2)||theta||^2 instead
        (``retrain``: w_i = 0 removes z_i); n and l2 are those of the unweighted objective."""
        th = self.theta if theta is None else theta

        def part(t, x, y, w):
            losses = self.losses(t, x, y)
            return (losses if w is None else w * losses).sum() / self.n

        def term(x, y, w):
            with torch.no_grad():
                if with_grad:
                    g, val = grad_and_value(part)(th, x, y, w)
                    return val, g
                return (part(th, x, y, w),)

        sums = self.stream(term, weights=weights, check_labels=True)
        total = sums[0] + 0.5 * self.l2 * th.dot(th)
        return total, (sums[1] + self.l2 * th) if with_grad else None

    # ---- second derivatives -------------------------------------------------------------
    def hvp_batch(self, V: Tensor, x: Tensor, y: Tensor, scale: float, weights: Tensor | None = None) -> Tensor:
        """scale * sum_b w_b grad^2 L(z_b) V for one batch (w = 1 by default), V [k, p] -> [k, p],
        by reverse-over-reverse differentiation: one backward graph of the gradient, then a
        vmapped vector-Jacobian product per direction (H is symmetric, so v^T H = (H v)^T).
        Chosen over forward-over-reverse (jvp of grad) because it measured faster on the
        benchmark networks, equal to round-off, and has no forward-mode start-up cost."""
        x, y = self.cast(x, y)
        w = 1.0 if weights is None else weights
        g = grad(lambda th: (w * self.losses(th, x, y)).sum() * scale)
        _, pullback = vjp(g, self.theta)
        with torch.no_grad():
            return vmap(lambda v: pullback(v)[0])(V)

    def hvp(self, V: Tensor, *, weights: Tensor | None = None) -> Tensor:
        """H V for the full objective, H = grad^2 R(theta_hat) (includes l2 * I). V: [k, p] or [p].
        ``weights`` [n]: the Hessian of R_w (see ``risk``) instead."""
        single = V.dim() == 1
        V = (V.unsqueeze(0) if single else V).to(self.device, self.dtype)
        out = self.stream(lambda x, y, w: self.hvp_batch(V, x, y, 1.0 / self.n, w), weights=weights) + self.l2 * V
        return out[0] if single else out

    def hessian(self, chunk: int = 256) -> Tensor:
        """The explicit Hessian [p, p] of R, built from HVPs with unit vectors ``chunk`` columns
        at a time (memory: chunk x batch activations). Only sensible for small p."""
        eye_cols = []
        for j in range(0, self.p, chunk):
            E = torch.zeros(min(chunk, self.p - j), self.p, device=self.device, dtype=self.dtype)
            E[torch.arange(E.shape[0]), torch.arange(j, j + E.shape[0])] = 1.0
            eye_cols.append(self.hvp(E))
        H = torch.cat(eye_cols, 0)
        return 0.5 * (H + H.T)  # symmetric up to round-off; symmetrise for Cholesky/eigh

    def sample_batch(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A uniformly random mini-batch (without replacement) of the training data."""
        idx = torch.randperm(self.n, generator=generator)[: min(size, self.n)]
        return self.train.take(idx.sort().values)


#: what ``Objective.stream`` sums: a tensor, or a tuple / list / dict of tensors
Sum = TypeVar("Sum", Tensor, tuple, list, dict)


def _map(fn: Callable[[Tensor], Tensor], tree: Sum) -> Sum:
    """``fn`` applied to every tensor of a tensor, tuple, list or dict of tensors."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: fn(v) for k, v in tree.items()}
    return type(tree)(fn(v) for v in tree)


def _add(a: Sum, b: Sum) -> Sum:
    """a + b entry by entry, for two sums of the same structure."""
    if isinstance(a, Tensor):
        return a + b
    if isinstance(a, dict):
        return {k: a[k] + b[k] for k in a}
    return type(a)(u + v for u, v in zip(a, b))
