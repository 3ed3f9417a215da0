"""Scale-out on torch.distributed: each rank holds a shard of the training data.

What is sharded and what is replicated (see docs/distributed.md):

* sharded: the training data (contiguous blocks of rows, ``shard_bounds``), hence every pass
  over it: HVPs, the training risk and its gradient, the explicit Hessian, per-example
  gradients and the columns of the score matrix;
* replicated: the model and theta_hat, the test data, test gradients, the solver state and
  s_test. Every Hessian-vector product is the sum of the ranks' shard sums (``all_reduce``),
  so every rank runs the same solver iterations on the same numbers and gets the same s_test.
* gathered: the [m, n] score matrix (``all_gather`` of the ranks' column blocks).

No process group initialised = one process: every function here falls back to the local
computation, so the same script runs with ``python`` and with ``torchrun``.

Entry point for a named validation problem: ``python -m influencekit.experiments.sharded``
(the same under ``torchrun``).

Sign convention: the matrix is up_loss = I_up,loss (positive = harmful, negative = helpful);
loo = -(1/n) up_loss.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data import DataLike, Examples
from ..errors import InputError
from ..influence import Influence
from ..losses import LossFn, check_targets
from ..objective import Objective


# ---- collectives (identity without a process group) --------------------------------------
def active() -> bool:
    """Whether a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over all ranks (in place, and returned). Use it for any curvature statistic
    that is a sum over training points (HVPs, Kronecker factors, Gram matrices)."""
    if active() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank ``rank``'s shard: contiguous blocks whose sizes differ by at most one."""
    if not 0 <= rank < world:
        raise InputError(f"rank must be in [0, {world}), got {rank}.")
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def shard(data: DataLike, rank: int | None = None, world: int | None = None) -> Examples:
    """This rank's shard of ``data`` (all of it without a process group)."""
    r, w = rank_and_world()
    r, w = (r if rank is None else rank), (w if world is None else world)
    ex = data if isinstance(data, Examples) else Examples(data, name="training data")
    lo, hi = shard_bounds(len(ex), r, w)
    if hi <= lo:
        raise InputError(f"rank {r} of {w} gets no training rows (n = {len(ex)}); use at most n processes.")
    return ex.subset(list(range(lo, hi)))


def _counts(n_local: int, device: torch.device) -> list[int]:
    """Number of rows on every rank (all_gather of the local count)."""
    _, world = rank_and_world()
    if world == 1:
        return [n_local]
    mine = torch.tensor([n_local], dtype=torch.long, device=device)
    out = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(out, mine)
    return [int(c.item()) for c in out]


def gather_columns(local: Tensor, counts: list[int]) -> Tensor:
    """Concatenate every rank's column block [k, counts[r]] in rank order: [k, sum(counts)].
    Blocks are padded to the largest so one ``all_gather`` of equal shapes suffices."""
    if len(counts) == 1:
        return local
    width = max(counts)
    padded = local.new_zeros(local.shape[0], width)
    padded[:, :local.shape[1]] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:, :c] for part, c in zip(parts, counts)], 1)


# ---- the sharded objective ---------------------------------------------------------------
class ShardedObjective(Objective):
    """An ``Objective`` whose training data is this rank's shard, and whose n, risk and HVPs
    (hence ``hessian``, CG and exact solves) are those of the full training set.

    Args: as ``Objective``, with ``shard`` the rows this rank holds (``shard(data)``).
    ``counts`` holds the row count of every rank; this rank's rows are global columns
    [offset, offset + len(shard)). Stochastic solvers that sample mini-batches (LiSSA) are
    not supported: their samples would differ between ranks.
    """

    def __init__(self, model: nn.Module, loss: str | LossFn, shard: DataLike, **kwargs: Any):
        local = len(shard if isinstance(shard, Examples) else Examples(shard, name="training data"))
        device = kwargs.get("device") or next(model.parameters()).device
        self.counts = _counts(local, torch.device(device))
        rank, _ = rank_and_world()
        self.offset = sum(self.counts[:rank])
        super().__init__(model, loss, shard, **kwargs)

    @property
    def n(self) -> int:
        """Number of training points on all ranks together."""
        return sum(self.counts)

    @property
    def n_local(self) -> int:
        return len(self.train)

    def hvp(self, V: Tensor) -> Tensor:
        """H V of the full objective: this shard's (1/n) sum grad^2 L V, summed over ranks, + l2 V."""
        single = V.dim() == 1
        V = (V.unsqueeze(0) if single else V).to(self.device, self.dtype)
        part = torch.zeros_like(V)
        for _, x, y in self.train.batches(self.batch_size):
            part = part + self.hvp_batch(V, x, y, 1.0 / self.n)
        out = all_reduce_sum(part) + self.l2 * V
        return out[0] if single else out

    def risk(self, theta: Tensor | None = None, *, with_grad: bool = False) -> tuple[Tensor, Tensor | None]:
        """R(theta) of the full training set and, if asked, its gradient [p] (all-reduced)."""
        from torch.func import grad_and_value

        th = self.theta if theta is None else theta
        acc = torch.zeros(1 + (th.numel() if with_grad else 0), dtype=th.dtype, device=th.device)

        def part(t, x, y):
            return self.losses(t, x, y).sum() / self.n

        for start, x, y in self.train.batches(self.batch_size):
            if self.train.y is None:
                check_targets(self.loss_fn, self.output_shape, y, "training data", start)
            x, y = self.cast(x, y)
            with torch.no_grad():
                if with_grad:
                    gb, val = grad_and_value(part)(th, x, y)
                    acc[1:] += gb
                else:
                    val = part(th, x, y)
            acc[0] += val
        acc = all_reduce_sum(acc)
        total = acc[0] + 0.5 * self.l2 * th.dot(th)
        return total, (acc[1:] + self.l2 * th) if with_grad else None

    def sample_batch(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        raise InputError("stochastic solvers (lissa) sample mini-batches, which would differ between ranks; "
                         "use solver='cg' or 'exact' with a sharded objective, or run lissa in one process.")


class ShardedInfluence(Influence):
    """``Influence`` over training data sharded across ranks. Arguments as ``Influence``, with
    ``shard`` this rank's rows. ``up_loss``, ``loo`` and ``self_influence`` return the full
    matrices (all columns, gathered from every rank); ``up_params`` takes local row indices."""

    def __init__(self, model: nn.Module, loss: str | LossFn, shard: DataLike, *, l2: float = 0.0,
                 params: Iterable[str] | None = None, batch_size: int = 512, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, **kwargs: Any):
        # Influence validates the arguments and builds the solver; its local objective is then
        # replaced by the sharded one (same model, loss and settings)
        super().__init__(model, loss, shard, l2=l2, params=params, batch_size=batch_size, dtype=dtype,
                         device=device, **kwargs)
        local = self.objective
        self.objective = ShardedObjective(model, loss, local.train, l2=l2, params=local.names,
                                          batch_size=batch_size, dtype=local.dtype, device=local.device)

    def up_loss(self, test: DataLike, *, method: str = "grad", progress: bool = False) -> Tensor:
        """I_up,loss [m, n] over all ranks' training points (positive = harmful). ``method`` is
        fixed (default ``grad``) so that every rank scores the same way."""
        return gather_columns(super().up_loss(test, method=method, progress=progress), self.objective.counts)

    def self_influence(self, *, batch_size: int | None = None, progress: bool = False) -> Tensor:
        """I_up,loss(z_i, z_i) for all n training points: [n] (gathered).

        An iterative solver's HVPs are collectives, so all ranks must solve the same systems in
        lockstep: at every step each rank contributes one batch of its gradients (none once its
        shard is done), the batches are gathered, solved together on every rank, and each rank
        keeps its own rows."""
        self.fit()
        obj = self.objective
        b = batch_size or obj.batch_size
        rank, world = rank_and_world()
        out = []
        for lo in range(0, max(obj.counts), b):
            hi = min(lo + b, obj.n_local)
            G = obj.grads(*obj.train.take(slice(lo, hi))) if hi > lo else obj.theta.new_zeros(0, obj.p)
            sizes = [max(0, min(lo + b, c) - lo) for c in obj.counts]
            G_all = gather_columns(G.T, sizes).T  # [sum(sizes), p], the same on every rank
            mine = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
            out.append(-(G * self.solver.solve(G_all)[mine]).sum(1))
        return gather_columns(torch.cat(out)[None], obj.counts)[0]


# ---- entry point -------------------------------------------------------------------------
def init_from_env(backend: str | None = None) -> bool:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
    ...): gloo on CPU, nccl when CUDA is available. Returns False (one process) without it."""
    if "WORLD_SIZE" not in os.environ or active():
        return active()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":  # one GPU per rank, named so that NCCL need not guess the mapping
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, device_id=device)
    else:
        dist.init_process_group(backend=backend)
    return True
