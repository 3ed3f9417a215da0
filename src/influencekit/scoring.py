"""Fast scoring of the [k, n] matrix s_k^T grad L(z_i) from per-layer captures, without
per-example gradients [B, p].

The layer inputs a and output gradients g of a batch come from the one capture
(``capture.LayerCapture``, one forward and one backward pass). For a linear map per location
(``nn.Linear``, ``nn.Conv2d``) with block [W | b] [out, cols], the per-example gradient is
G_i = sum_t g_{i,t} a_{i,t}^T, so a query block S_k [out, cols] scores z_i as

    <S_k, G_i> = sum_t g_{i,t}^T S_k a_{i,t}

Per layer and example the contraction costs k*T*out*cols multiply-adds, forming G_i first costs
T*out*cols + k*out*cols; each layer takes the cheaper order (``layer_block``: contraction for
T = 1 or k = 1, per-layer gradient for convolutions scored against many queries). For an
``nn.Embedding`` (a linear map on one-hot inputs) the column of S_k of each token is gathered.
Any other module is a generic block of the capture: its per-example block gradients [B, P] come
from a VJP of that module alone, and are contracted with S_k's block. A parameter shared by
several modules (tied weights) is one block per module; their scores add.

These are raw scores s_k^T grad L(z_i); the sign convention (``influencekit.convention``) is
applied by the caller (``Influence.up_loss``, ``Influence.scores``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .capture import SCORING_USE, LayerBlock, LayerCapture, find_layers
from .data import DataLike, Examples
from .errors import InputError, NonFiniteError
from .objective import Objective


def layer_block(A: Tensor, G: Tensor, Sw: Tensor, Sb: Tensor | None = None) -> Tensor:
    """sum_t g_{b,t}^T S_k a_{b,t} (+ sum_t g_{b,t}^T s_k^bias) for one layer: [B, k].

    A: [B, T, in] layer inputs, G: [B, T, out] output gradients, Sw: [k, out, in], Sb: [k, out]
    (or None, e.g. when A carries the bias's column of ones and Sw its column).
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


def embedding_block(tokens: Tensor, G: Tensor, E: Tensor) -> Tensor:
    """sum_t g_{b,t}^T E_k[token_{b,t}] for one embedding: [B, k]. tokens: [B, T] indices,
    G: [B, T, d] output gradients, E: [k, V, d] the queries in the layout of the weight [V, d]."""
    B, T = tokens.shape
    rows = E[:, tokens.reshape(-1)]  # [k, B*T, d]: the query row of every position's token
    return torch.einsum("knd,nd->kn", rows, G.reshape(B * T, -1)).view(-1, B, T).sum(2).T


class LayerScorer:
    """Scores batches of examples against fixed query vectors S [k, p] of an ``Objective``.

    ``scorer(x, y)`` -> [k, B] equals ``S @ objective.grads(x, y).T`` (to round-off), computed
    from one capture of the batch (one forward and one backward pass, plus a per-example VJP of
    each generic module).

    Args:
        objective: defines the model, loss and parameters in scope (never modified).
        S: [k, p] query vectors (e.g. s_test), in the objective's parameter order.
        dtype: compute dtype; default the objective's (float32 for a float32 model); pass
            ``torch.float64`` for exact checks.

    Raises ``UnsupportedLayerError`` for a module in scope the capture cannot replay (one that
    returns several tensors or takes keyword arguments, an embedding with ``max_norm``): score
    those with ``method="grad"`` or ``"jvp"``.
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
        blocks = find_layers(objective, generic=None, shared=True, use=SCORING_USE)  # every module, any size
        self.capture = LayerCapture(objective, blocks, dtype=self.dtype, use=SCORING_USE)
        S = S.to(self.device, self.dtype)
        self.queries = [self._query(blk, S) for blk in blocks]

    @staticmethod
    def _query(blk: LayerBlock, S: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """A block's part of S, contiguous (it is read every batch): (S_w [k, d_out, d_in] or None,
        S_b [k, d_out] or None) of a Linear/Conv2d layer; the queries in the weight's layout
        [k, V, d] of an embedding; the block [k, 1, P] of a generic one."""
        Q = blk.gather(S)
        if blk.kind == "embedding":
            return Q.transpose(1, 2).contiguous(), None
        if blk.kind == "generic":
            return Q, None
        Sw = Q[:, :, :blk.d_in].contiguous() if blk.weight is not None else None
        return Sw, (Q[:, :, -1].contiguous() if blk.bias is not None else None)

    @property
    def blocks(self) -> list[LayerBlock]:
        return self.capture.blocks

    @property
    def generic_names(self) -> list[str]:
        """Parameters in scope scored from per-example VJPs of their module (generic blocks)."""
        return [f"{b.name}.{pn}" if b.name else pn for b in self.blocks if b.kind == "generic" for pn, _ in b.params]

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """s_k^T grad L(z_b) for the batch: [k, B]."""
        total = torch.zeros(x.shape[0], self.k, dtype=self.dtype, device=self.device)
        for blk, (a, g), (Q, Qb) in zip(self.blocks, self.capture.capture(x, y, ones=False), self.queries):
            g = g[:, 0]  # the empirical capture has one pseudo-gradient: the gradient itself
            if blk.kind == "generic":  # g is the block's per-example gradient [B, P]
                total += g @ Q[:, 0].T
            elif blk.kind == "embedding":
                total += embedding_block(a, g, Q)
            elif Q is None:  # only the bias in scope
                total += g.sum(1) @ Qb.T
            else:
                total += layer_block(a, g, Q, Qb)
        return total.T


def layer_scores(objective: Objective, S: Tensor, data: DataLike | None = None, *, batch_size: int | None = None,
                 dtype: torch.dtype | None = None, progress: bool = False) -> Tensor:
    """s_k^T grad L(z_i) for every example of ``data`` (default: the training data): [k, n].

    Equals ``S @ G.T`` for the per-example gradients G [n, p]; streams ``data`` in chunks of
    ``batch_size`` (default the objective's), so memory is one batch of activations plus the
    [k, n] output. Raw scores, as ``LayerScorer``.
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
