"""DataInf (Kwon et al., ICLR 2024): a closed-form inverse per parameter block, by swapping the
inverse and the average over training points.

For a block l (one parameter tensor in scope) with per-example gradients g_i [p_l], DataInf takes
the damped empirical Fisher F_l + mu_l I, F_l = (1/n) sum_i g_i g_i^T, as the block's curvature, and
replaces its inverse by the average of the per-example inverses, each one Sherman-Morrison:

    (F_l + mu I)^-1  ~  (1/n) sum_i (g_i g_i^T + mu I)^-1
                     =  (1/mu) (I - (1/n) sum_i g_i g_i^T / (mu + ||g_i||^2))

It is exact for n = 1 and for mutually orthogonal g_i, and its error grows with the block's size
(the paper's setting is LoRA adapters, whose blocks are small). mu_l = l2 + d with an explicit
damping d, or, with damping=None, l2 + 0.1 tr(F_l) / p_l: a tenth of F_l's mean eigenvalue (the
paper's rule, and K-FAC's here). No Hessian-vector products: a solve is one pass of per-example
gradients, or a product with them when they fit the cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import InputError
from ..objective import Objective
from .base import Solver, register

#: damping=None: mu_l = l2 + AUTO_DAMPING x mean eigenvalue of the block's empirical Fisher.
AUTO_DAMPING = 0.1


@register
class DataInfSolver(Solver):
    """The DataInf approximation of (H + dI)^{-1} V, block by block (one block per parameter tensor).

    Args:
        damping: d added to each block's empirical Fisher with the objective's l2; None (default)
            picks d per block as above.
        cache: keep the per-example gradients [n, p] in memory when n p is at most this many
            entries (default 2^25: 256 MB in float64); otherwise every solve recomputes them.
        batch_size: training examples per gradient batch (default: the objective's).

    After ``fit``: ``block_damping`` (mu_l - l2, the d used per block, in scope order).
    """

    name = "datainf"
    automatic_damping = True
    needs = frozenset({"grads"})

    def __init__(self, damping: float | None = None, cache: int = 1 << 25, batch_size: int | None = None):
        super().__init__(0.0 if damping is None else damping)
        if cache < 0 or (batch_size is not None and batch_size < 1):
            raise InputError(f"cache must be >= 0 and batch_size >= 1, got cache={cache}, batch_size={batch_size}.")
        self.auto_damping = damping is None
        self.cache, self.batch_size = cache, batch_size
        self.block_damping: list[float] = []
        self._cached: list[Tensor] | None = None

    def _sum(self, term: Callable[[Tensor], Tensor]) -> Tensor:
        """sum over the training data of ``term(G)`` for per-example gradient batches G [B, p],
        through ``Objective.stream`` (so reduced like every such sum), or over the cached batches."""
        obj = self.objective
        if self._cached is None:
            return obj.stream(lambda x, y, w: term(obj.grads(x, y)), batch_size=self.batch_size or obj.batch_size)
        total = term(self._cached[0])
        for G in self._cached[1:]:
            total = total + term(G)
        return obj.reduce(total)

    def _fit(self, objective: Objective) -> None:
        self._cached = None
        keep = objective.n * objective.p <= self.cache
        kept = []

        def squares(G):  # ||g_i||^2 per block, summed over the batch: [blocks]
            if keep:
                kept.append(G)
            return torch.stack([(g * g).sum() for g in objective.blocks(G).values()])

        sq = self._sum(squares)
        self._cached = kept if keep else None
        mean_eig = sq / objective.n / torch.tensor(objective.numels, dtype=sq.dtype, device=sq.device)  # tr(F_l)/p_l
        d = AUTO_DAMPING * mean_eig if self.auto_damping else torch.full_like(mean_eig, self.damping)
        mu = objective.l2 + d
        if not (mu > 0).all():
            bad = [k for k, m in zip(objective.names, mu.tolist()) if not m > 0]
            raise InputError(f"DataInf needs l2 + damping > 0 in every block; blocks {bad} have none (l2 = "
                             f"{objective.l2}, damping = {self.damping}): pass damping > 0 or damping=None.")
        self.block_damping = d.tolist()
        self._mu = mu
        # mu per column of theta, for the final division
        self._mu_cols = torch.repeat_interleave(mu, torch.tensor(objective.numels, device=mu.device))

    def _solve(self, V: Tensor) -> Tensor:
        obj = self.objective
        Vb = obj.blocks(V)

        def term(G):  # sum_i g_i (g_i^T v) / (mu + ||g_i||^2) per block, over the batch: [k, p]
            parts = []
            for (k, g), mu in zip(obj.blocks(G).items(), self._mu):
                c = (g @ Vb[k].T) / (mu + (g * g).sum(1, keepdim=True))  # [B, k]
                parts.append(c.T @ g)
            return torch.cat(parts, 1)

        return (V - self._sum(term) / obj.n) / self._mu_cols

    def settings(self) -> dict:
        return {"solver": self.name, "damping": "auto" if self.auto_damping else self.damping,
                "block_damping": self.block_damping, "cached_gradients": self._cached is not None}
