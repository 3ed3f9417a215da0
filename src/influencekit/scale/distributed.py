"""Scale-out on torch.distributed: each rank holds a shard of the training data.

What is sharded and what is replicated (see docs/distributed.md):

* sharded: the training data (contiguous blocks of rows, ``shard_bounds``), hence every pass
  over it. Every such pass is ``Objective.stream``, whose reduction hook a ``ShardedObjective``
  sets to an ``all_reduce`` sum: HVPs, the training risk and its gradient, the explicit Hessian,
  K-FAC's factors and DataInf's sums are the full-data ones on every rank, with no method of the
  objective overridden. Per-example gradients and the columns of the score matrix stay local;
* replicated: the model and theta_hat, the test data, test gradients, the solver state and
  s_test: every rank runs the same solver iterations on the same numbers and gets the same s_test;
* gathered: the [m, n] score matrix (``all_gather`` of the ranks' column blocks).

No process group initialised = one process: every function here falls back to the local
computation, so the same script runs with ``python`` and with ``torchrun``.

Entry point for a named validation problem: ``python -m influencekit.experiments.sharded``
(the same under ``torchrun``). Signs and scaling: ``influencekit.convention``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data import DataLike, Examples
from ..errors import InputError
from ..influence import Influence
from ..losses import LossFn
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
    """An ``Objective`` whose training data is this rank's shard and whose sums over the training
    data are summed over all ranks (``reduce``), so its n, risk and HVPs (hence ``hessian``, CG,
    exact, K-FAC and DataInf fits) are those of the full training set.

    Args: as ``Objective``, with ``shard`` the rows this rank holds (``shard(data)``).
    ``counts`` holds the row count of every rank; this rank's rows are global rows
    [offset, offset + len(shard)) (per-example weights, as in ``risk``, are indexed globally).
    Stochastic solvers that sample mini-batches (LiSSA) are not supported: their samples would
    differ between ranks.
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

    def reduce(self, total: Tensor) -> Tensor:
        """This shard's sum over its training rows, summed over all ranks (in place)."""
        return all_reduce_sum(total)

    def sample_batch(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        raise InputError("stochastic solvers (lissa) sample mini-batches, which would differ between ranks; "
                         "use solver='cg' or 'exact' with a sharded objective, or run lissa in one process.")


#: what a ``ShardedObjective`` serves of the solvers' ``needs`` (no mini-batch HVPs)
SERVES = frozenset({"hvp", "hessian", "layers", "grads"})


class ShardedInfluence(Influence):
    """``Influence`` over training data sharded across ranks. Arguments as ``Influence``, with
    ``shard`` this rank's rows. ``scores``, ``up_loss``, ``loo``, ``top_k`` (without a prefilter)
    and ``self_influence`` return the full results (all n columns, gathered from every rank);
    methods that take training rows (``up_params``, ``train_gradients``, ``pert_loss``,
    ``loo_newton``) take this rank's local rows. A solver that needs what a sharded objective
    cannot serve (LiSSA's mini-batch HVPs) is refused, and so are the resumable ``run`` and the
    prefilters, which would index the shard with global rows."""

    def __init__(self, model: nn.Module, loss: str | LossFn, shard: DataLike, **kwargs: Any):
        super().__init__(model, loss, shard, **kwargs)
        missing = sorted(self.solver.needs - SERVES)
        if missing:
            raise InputError(f"solver {self.solver.name!r} needs {missing}, which a sharded objective cannot serve "
                             "(each rank would sample other mini-batches); use solver='cg', 'exact', 'pcg', "
                             "'ekfac' or 'datainf', or run it in one process.")

    def make_objective(self, model: nn.Module, loss: str | LossFn, train: DataLike, **kwargs: Any) -> Objective:
        """The sharded objective, built once: ``train`` is this rank's shard."""
        return ShardedObjective(model, loss, train, **kwargs)

    def _rows(self, index: Any) -> Tensor:
        """This rank's rows: checked against its shard, not against n."""
        rows = super()._rows(torch.arange(self.objective.n_local) if index is None else index)
        if rows.numel() and rows.max() >= self.objective.n_local:
            raise InputError(f"on a sharded influence, training rows are this rank's local rows, in [0, "
                             f"{self.objective.n_local}); got {rows.max().item()}.")
        return rows

    def scores(self, S: Tensor, data: DataLike | None = None, *, index: Any = None, method: str = "grad",
               progress: bool = False) -> Tensor:
        """grad L(z_i)^T s_k for every training point of every rank: [k, n] (gathered). ``method``
        defaults to ``grad`` so that every rank scores the same way."""
        if data is not None or index is not None:
            raise InputError("on a sharded influence, scores covers every rank's training rows; pass neither data "
                             "nor index (score other data with an Influence in one process).")
        return gather_columns(super().scores(S, method=method, progress=progress), self.objective.counts)

    def up_loss(self, test: DataLike, *, method: str = "grad", progress: bool = False) -> Tensor:
        """I_up,loss [m, n] over all ranks' training points (gathered)."""
        return super().up_loss(test, method=method, progress=progress)

    def top_k(self, test: DataLike, k: int = 10, *, prefilter: str | None = None, **options: Any) -> Any:
        """``Influence.top_k`` over every rank's training points; without a prefilter only."""
        if prefilter is not None:
            raise InputError("the prefilters index this rank's shard with global rows; use prefilter=None on a "
                             "sharded influence, or prefilter in one process.")
        return super().top_k(test, k, **options)

    def run(self, test: DataLike, folder: Any, **options: Any) -> Tensor:
        raise InputError("the resumable run stores chunks of one process's rows; on a sharded influence compute "
                         "up_loss (every rank gets the gathered matrix) and store it from rank 0.")

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
            out.append(-(G * self.solve(G_all)[mine]).sum(1))
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
