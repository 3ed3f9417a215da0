"""Candidates by last-layer gradient: a prefilter aimed at influence itself, not at similarity.

FastIF's k nearest neighbours in feature space contain the most *similar* training points, which
for a network whose features cluster by class are the most typical ones, not necessarily the
most influential. Influence is a sum over the parameter blocks,

    I_up,loss(z_i, z_test) = -sum_b  s_b^T grad_b L(z_i),     s = (H + dI)^{-1} grad L(z_test),

and the block of the model's last layer (``head``) is cheap for every training point: its
gradient needs only a forward pass. So the candidates of a test point are the training points
with the largest last-layer term of each sign, found by maximum-inner-product search over the
embedding e_i = grad_head L(z_i) [n, p_head]:

    harmful candidates (I > 0):  largest  e_i . (-s_head)
    helpful candidates (I < 0):  largest  e_i . (+s_head)

k candidates = the first k // 2 of the harmful search + the first k - k // 2 of the helpful one
(disjoint for k <= n), interleaved, so that any prefix holds both kinds. The full influence is then
computed on them exactly (``prefilter.candidate_scores``). The index depends on the model and the
training data only; the query (s_head) on the test point.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..objective import Objective
from .index import KNNIndex


def head_params(model: nn.Module) -> list[str]:
    """Names of the parameters of the model's last ``nn.Linear`` (its output layer, by
    registration order), e.g. ``["head.weight", "head.bias"]`` for ``models.SmallCNN``."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise InputError(f"{type(model).__name__} has no nn.Linear layer to take last-layer gradients of; pass "
                         "params=[names of the output layer's parameters].")
    return [f"{last}.{p}" if last else p for p, t in dict(model.get_submodule(last).named_parameters()).items()
            if t.requires_grad]


def gradient_embedding(objective: Objective, params: Iterable[str] | None = None, *, batch_size: int | None = None,
                       progress: bool = False) -> Tensor:
    """Per-example gradients of the training loss with respect to ``params`` (default: the last
    layer's): [n, p_head], float32 on the CPU (FAISS's format)."""
    names = list(params) if params is not None else head_params(objective.model)
    sub = Objective(objective.model, objective.loss_fn, objective.train, l2=0.0, params=names,
                    batch_size=batch_size or objective.batch_size, dtype=objective.dtype, device=objective.device)
    out = []
    for _, x, y in tqdm(sub.train.batches(sub.batch_size), total=-(-sub.n // sub.batch_size), disable=not progress,
                        desc="last-layer gradients", unit="batch"):
        out.append(sub.grads(x, y).float().cpu())
    return torch.cat(out)


def head_block(objective: Objective, S: Tensor, params: Iterable[str] | None = None) -> Tensor:
    """The rows of ``S`` [m, p] (vectors over ``objective``'s parameters) restricted to ``params``
    (default: the last layer's): [m, p_head], in the order of ``gradient_embedding``."""
    names = list(params) if params is not None else head_params(objective.model)
    missing = [k for k in names if k not in objective.names]
    if missing:
        raise InputError(f"parameters {missing} are not in the objective's scope {objective.names}; the gradient "
                         "prefilter needs the last layer in scope (or name in-scope params).")
    S = S.unsqueeze(0) if S.dim() == 1 else S
    blocks = objective.blocks(S)
    return torch.cat([blocks[k] for k in names], dim=1).float().cpu()


def gradient_index(embedding: Tensor, *, kind: str = "flat", **options) -> KNNIndex:
    """A maximum-inner-product index over the last-layer gradients [n, p_head]."""
    return KNNIndex(embedding, kind=kind, metric="ip", **options)


def gradient_candidates(index: KNNIndex, S_head: Tensor, k: int) -> Tensor:
    """k candidates per test point [m, k]: the k // 2 training points with the largest positive
    last-layer contribution to I_up,loss (harmful) and the k - k // 2 with the most negative
    (helpful), interleaved harmful/helpful. ``S_head``: [m, p_head] from ``head_block``."""
    if index.meta.get("metric") != "ip":
        raise InputError("gradient candidates need an inner-product index (gradient_index); this one was built "
                         f"with metric {index.meta.get('metric')!r}.")
    n = index.n
    if not 2 <= k <= n:
        raise InputError(f"k must be in [2, n = {n}] for the gradient prefilter (half harmful, half helpful), got {k}.")
    kh, kg = k // 2, k - k // 2
    _, harmful = index.search(-S_head, kh)  # I = -e.s > 0  <=>  e.(-s) large
    _, helpful = index.search(S_head, kg)
    out = torch.empty(S_head.shape[0], k, dtype=torch.long)
    out[:, 0:2 * kh:2] = harmful
    out[:, 1:2 * kh:2] = helpful[:, :kh]
    if kg > kh:
        out[:, -1] = helpful[:, -1]
    return out
