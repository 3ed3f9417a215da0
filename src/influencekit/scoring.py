"""Fast scoring of the [k, n] matrix s_k^T grad L(z_i) by per-layer factorised contractions.

For an ``nn.Linear`` (or ``nn.Conv2d``) layer with weight W [out, in], the per-example gradient is

    grad_W L(z_i) = sum_t g_{i,t} a_{i,t}^T          (a: layer input, g = dL_i / d(layer output))

summed over positions t (T = 1 for a Linear on [B, in]; the unfolded patches of a convolution).
So a query block s_k (reshaped to [out, in]) scores z_i as sum_t g_{i,t}^T S_k a_{i,t}, and only
the layer inputs and output gradients of one forward + one backward pass over a batch are
needed: no ``vmap`` over examples and no [B, p] gradient matrix. Per layer and example the
contraction costs k*T*out*in multiply-adds, forming the layer's own gradient g a^T first costs
T*out*in + k*out*in; each layer takes the cheaper order (contraction for T = 1 or k = 1,
per-layer gradient for convolutions scored against many queries).

Parameters in scope that are not the weight/bias of a Linear or Conv2d (normalisation, embeddings,
a weight used by several modules) take the generic path: per-example gradients by
``torch.func.vmap`` over just those parameters.

These are raw scores; the influence sign convention is applied by the caller
(``influence.scores``/``Influence.up_loss``: I_up,loss = -s_test^T grad L(z_i), positive = harmful,
loo = -(1/n) I_up,loss).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from .capture import out_rows, patches
from .data import DataLike, Examples
from .errors import InputError, NonFiniteError
from .objective import Objective


@dataclass
class _Layer:
    """One Linear/Conv2d module whose weight (and bias, if in scope) are scored from its
    input activations and output gradients. ``Sw``: [k, out, in(*kh*kw)], ``Sb``: [k, out] or None."""

    name: str
    module: nn.Module
    Sw: Tensor
    Sb: Tensor | None


def _is_factorisable(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    # grouped convolutions and non-zero padding modes do not unfold into one matmul
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple)


def layer_block(A: Tensor, G: Tensor, Sw: Tensor, Sb: Tensor | None) -> Tensor:
    """sum_t g_{b,t}^T S_k a_{b,t} (+ sum_t g_{b,t}^T s_k^bias) for one layer: [B, k].

    A: [B, T, in] layer inputs, G: [B, T, out] output gradients, Sw: [k, out, in], Sb: [k, out].
    Chooses the cheaper order: contract S with A directly (k*T*out*in), or form the per-example
    layer gradient G^T A [B, out, in] first (T*out*in + k*out*in)."""
    B, T, n_in = A.shape
    k, n_out = Sw.shape[0], Sw.shape[1]
    if k * T <= T + k:
        # [B*T, in] @ [in, k*out] -> [B, T, k, out], then the dot with g over (t, out)
        P = (A.reshape(B * T, n_in) @ Sw.reshape(k * n_out, n_in).T).view(B, T, k, n_out)
        out = torch.einsum("btko,bto->bk", P, G)
    else:
        Gw = torch.bmm(G.transpose(1, 2), A)  # [B, out, in]: this layer's per-example gradient
        out = Gw.reshape(B, -1) @ Sw.reshape(k, -1).T
    if Sb is not None:
        out = out + G.sum(1) @ Sb.T
    return out


class LayerScorer:
    """Scores batches of examples against fixed query vectors S [k, p] of an ``Objective``.

    ``scorer(x, y)`` -> [k, B] equals ``S @ objective.grads(x, y).T`` (to round-off), computed
    from one forward and one backward pass over the batch.

    Args:
        objective: defines the model, loss and parameters in scope (never modified: a private
            copy of the model carries the capture hooks).
        S: [k, p] query vectors (e.g. s_test), in the objective's parameter order.
        dtype: compute dtype; default the objective's (float32 for a float32 model); pass
            ``torch.float64`` for exact checks.
    """

    def __init__(self, objective: Objective, S: Tensor, *, dtype: torch.dtype | None = None):
        S = S.unsqueeze(0) if S.dim() == 1 else S
        if S.dim() != 2 or S.shape[1] != objective.p:
            raise InputError(f"query vectors must be [k, {objective.p}] (p = parameters in scope), "
                             f"got {tuple(S.shape)}.")
        self.objective = objective
        self.dtype = dtype or objective.dtype
        self.device = objective.device
        self.k = S.shape[0]
        S = S.to(self.device, self.dtype)
        # the copy is ours: hooks on it never touch the user's module
        self.model = copy.deepcopy(objective.model).to(self.device, self.dtype)
        self.theta = objective.theta.to(self.dtype)
        self.fixed = {k: (v.to(self.dtype) if v.is_floating_point() else v) for k, v in objective.fixed.items()}
        blocks = objective.blocks(S)
        users = {}  # parameter id -> number of modules holding it (tied weights go generic)
        for _, m in self.model.named_modules():
            for p in m.parameters(recurse=False):
                users[id(p)] = users.get(id(p), 0) + 1
        self.layers: list[_Layer] = []
        covered: set[str] = set()
        for name, m in self.model.named_modules():
            wname = f"{name}.weight" if name else "weight"
            bname = f"{name}.bias" if name else "bias"
            if not _is_factorisable(m) or wname not in blocks or users.get(id(m.weight), 0) != 1:
                continue
            has_b = m.bias is not None and bname in blocks and users.get(id(m.bias), 0) == 1
            Sw = blocks[wname].reshape(self.k, m.weight.shape[0], -1)
            self.layers.append(_Layer(name, m, Sw, blocks[bname] if has_b else None))
            covered |= {wname, bname} if has_b else {wname}
        self.rest = [k for k in objective.names if k not in covered]
        self.S_rest = torch.cat([blocks[k] for k in self.rest], 1) if self.rest else None

    @property
    def generic_names(self) -> list[str]:
        """Parameters in scope scored by the generic per-example-gradient path."""
        return list(self.rest)

    def _params(self, theta: Tensor) -> dict[str, Tensor]:
        return self.objective.unflatten(theta)

    def _layer_scores(self, x: Tensor, y: Tensor) -> Tensor:
        """[B, k] from the factorisable layers: one forward pass with input capture, one backward."""
        # lists: a module called several times in one forward (a reused block) contributes
        # sum over calls of g a^T to its weight's gradient, so every call is scored
        inputs: dict[str, list[Tensor]] = {lay.name: [] for lay in self.layers}
        outputs: dict[str, list[Tensor]] = {lay.name: [] for lay in self.layers}

        def hook(name):
            def capture(module, args, out):
                inputs[name].append(args[0].detach())
                outputs[name].append(out)
            return capture

        handles = [lay.module.register_forward_hook(hook(lay.name)) for lay in self.layers]
        try:
            with torch.enable_grad():
                # theta as a leaf that requires grad makes the layer outputs part of the graph;
                # autograd.grad below then computes output gradients only, never weight gradients
                th = self.theta.detach().requires_grad_(True)
                out = functional_call(self.model, (self._params(th), self.fixed), (x,))
                losses = self.objective.loss_fn(out, y)
                if losses.dim() != 1 or losses.shape[0] != x.shape[0]:
                    raise InputError(f"the loss returned shape {tuple(losses.shape)} for a batch of {x.shape[0]}; "
                                     "it must return one value per example (use reduction='none').")
                calls = [(lay, a, o) for lay in self.layers for a, o in zip(inputs[lay.name], outputs[lay.name])]
                # sum of per-example losses: dL_i/d(output of example i), as examples do not mix
                gs = torch.autograd.grad(losses.sum(), [o for _, _, o in calls], allow_unused=True) if calls else ()
        finally:
            for h in handles:
                h.remove()
        total = x.new_zeros(x.shape[0], self.k, dtype=self.dtype)
        for (lay, a, _), g in zip(calls, gs):
            if g is None:  # layer not on the path to the loss: zero gradient
                continue
            A = patches(lay.module, a)
            total = total + layer_block(A, out_rows(lay.module, g), lay.Sw, lay.Sb)
        return total

    def _generic_scores(self, x: Tensor, y: Tensor) -> Tensor:
        """[B, k] from the remaining parameters: vmap per-example gradients over them only."""
        base = self._params(self.theta)
        rest = {k: base[k] for k in self.rest}
        others = {k: v for k, v in base.items() if k not in rest}

        def single(r, xi, yi):
            out = functional_call(self.model, ({**others, **r}, self.fixed), (xi.unsqueeze(0),))
            return self.objective.loss_fn(out, yi.unsqueeze(0))[0]

        with torch.no_grad():
            g = vmap(grad(single), in_dims=(None, 0, 0))(rest, x, y)
        flat = torch.cat([g[k].reshape(x.shape[0], -1) for k in self.rest], 1)
        return flat @ self.S_rest.T

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """s_k^T grad L(z_b) for the batch: [k, B]."""
        x = x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)
        y = y.to(self.device, self.dtype) if y.is_floating_point() else y.to(self.device)
        total = self._layer_scores(x, y) if self.layers else x.new_zeros(x.shape[0], self.k, dtype=self.dtype)
        if self.rest:
            total = total + self._generic_scores(x, y)
        return total.T


def layer_scores(objective: Objective, S: Tensor, data: DataLike | None = None, *, batch_size: int | None = None,
                 dtype: torch.dtype | None = None, progress: bool = False) -> Tensor:
    """s_k^T grad L(z_i) for every example of ``data`` (default: the training data): [k, n].

    Equals ``influence.scores(objective, S, data, method="grad")``; streams ``data`` in chunks of
    ``batch_size`` (default the objective's), so memory is one batch of activations plus the [k, n]
    output. Raw scores: I_up,loss = -scores for S = s_test (positive = harmful).
    """
    scorer = LayerScorer(objective, S, dtype=dtype)
    ex = objective.train if data is None else Examples(data, name="scored data")
    out = torch.empty(scorer.k, len(ex), dtype=scorer.dtype, device=scorer.device)
    b = batch_size or objective.batch_size
    for start, x, y in tqdm(ex.batches(b), total=-(-len(ex) // b), disable=not progress,
                            desc="scoring", unit="batch"):
        if data is not None:
            objective.check_batch(x, y, "scored data")
        block = scorer(x, y)
        if not torch.isfinite(block).all():
            rows = (~torch.isfinite(block)).any(0).nonzero().flatten()[:10] + start
            raise NonFiniteError(f"non-finite influence scores for examples {rows.tolist()}; their gradients are "
                                 "NaN/inf: check those inputs and the loss there.")
        out[:, start:start + x.shape[0]] = block
    return out
