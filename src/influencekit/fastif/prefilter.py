"""Influence over candidate training points only, the top helpful/harmful points, and recall.

For each test point j with s_test_j = (H + dI)^{-1} grad L(z_test_j), only the training points in
its candidate list C_j (its k nearest neighbours in feature space, ``index``, or its largest
last-layer terms, ``gradients``) are scored:

    I_up,loss(z_i, z_test_j) = -grad L(z_i)^T s_test_j,   i in C_j.

Each training point in the union of all candidate lists is scored once against all m vectors (a
point shared by several lists costs one gradient computation), so the cost is |union| examples,
at most min(n, m k), instead of n. Signs: ``influencekit.convention.SIGN_CONVENTION``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import InputError
from ..influence import scores
from ..objective import Objective


def candidate_scores(objective: Objective, S: Tensor, candidates: Tensor, *, method: str = "auto",
                     batch_size: int | None = None, progress: bool = False) -> Tensor:
    """grad L(z_i)^T s_j for every candidate i of every row j: [m, k], aligned with ``candidates``.

    Args:
        S: [m, p] vectors (s_test of m test points).
        candidates: [m, k] training indices (each row: the candidates of one test point).
        method: how the union is scored, as in ``influence.scores`` (auto: forward-mode for one or
            two rows, per-layer factorised contractions above).

    Equals ``influence.scores(objective, S)[j, candidates[j]]`` (the full [m, n] computation
    restricted to the candidates); negate for I_up,loss.
    """
    S = S.unsqueeze(0) if S.dim() == 1 else S
    candidates = torch.as_tensor(candidates, dtype=torch.long)
    if candidates.dim() != 2 or candidates.shape[0] != S.shape[0]:
        raise InputError(f"candidates must be [m, k] with m = {S.shape[0]} rows (one per vector of S), got "
                         f"{tuple(candidates.shape)}.")
    n = objective.n
    if candidates.numel() and (candidates.min() < 0 or candidates.max() >= n):
        raise InputError(f"candidate indices must lie in [0, n = {n}); got range [{candidates.min().item()}, "
                         f"{candidates.max().item()}].")
    union, where = torch.unique(candidates, sorted=True, return_inverse=True)
    block = scores(objective, S, index=union, method=method, batch_size=batch_size, progress=progress)
    return block.gather(1, where.to(block.device))


def top_influential(up_loss: Tensor, index: Tensor | None = None, top: int = 10) -> dict[str, Tensor]:
    """The ``top`` most harmful (largest I_up,loss > 0 first) and most helpful (most negative
    first) training points per test point.

    Args:
        up_loss: I_up,loss [m, c] over c scored points (all n, or the candidates).
        index: training indices [m, c] of those columns (default: 0..c-1, i.e. all n scored).

    Returns {"harmful_index", "harmful", "helpful_index", "helpful"}, each [m, min(top, c)].
    Harmful entries may be negative (and helpful positive) when fewer than ``top`` points have
    that sign.
    """
    if up_loss.dim() != 2:
        raise InputError(f"up_loss must be [m, c], got {tuple(up_loss.shape)}.")
    t = min(int(top), up_loss.shape[1])
    if index is None:
        index = torch.arange(up_loss.shape[1]).expand_as(up_loss)
    index = torch.as_tensor(index).to(up_loss.device)
    hv, hi = up_loss.topk(t, dim=1, largest=True)
    gv, gi = up_loss.topk(t, dim=1, largest=False)
    return {"harmful_index": index.gather(1, hi), "harmful": hv, "helpful_index": index.gather(1, gi), "helpful": gv}


def recall_at_k(full_up_loss: Tensor, neighbours: Tensor, ks: Iterable[int], top: int = 10) -> dict[int, dict]:
    """How many of the full method's most influential points the k-NN candidates contain.

    Args:
        full_up_loss: I_up,loss [m, n] of the full method for a sample of m test points.
        neighbours: [m, K] training indices, nearest first (K >= max(ks)).
        ks: candidate-list sizes to evaluate.
        top: size of the full method's top lists (harmful and helpful separately).

    Returns {k: {"harmful": r_h, "helpful": r_g, "mean": (r_h + r_g)/2, "per_test_harmful": [m],
    "per_test_helpful": [m]}}, where r = mean over test points of |top list in first k| / top.
    """
    ks = sorted(int(k) for k in ks)
    if neighbours.shape[0] != full_up_loss.shape[0] or (ks and ks[-1] > neighbours.shape[1]):
        raise InputError(f"neighbours must be [m = {full_up_loss.shape[0]}, K >= {ks[-1] if ks else 0}], got "
                         f"{tuple(neighbours.shape)}.")
    best = top_influential(full_up_loss, top=top)
    n = full_up_loss.shape[1]
    out: dict[int, dict] = {}
    for k in ks:
        inside = torch.zeros(full_up_loss.shape[0], n, dtype=torch.bool)
        inside.scatter_(1, neighbours[:, :k].cpu(), True)
        per = {s: inside.gather(1, best[f"{s}_index"].cpu()).double().mean(1) for s in ("harmful", "helpful")}
        out[k] = {"harmful": per["harmful"].mean().item(), "helpful": per["helpful"].mean().item(),
                  "mean": 0.5 * (per["harmful"].mean() + per["helpful"].mean()).item(),
                  "per_test_harmful": per["harmful"].tolist(), "per_test_helpful": per["helpful"].tolist()}
    return out
