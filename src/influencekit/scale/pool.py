"""s_test and scoring shards in worker processes (torch.multiprocessing, fork start method).

Workers inherit the fitted objective and solver by ``fork`` (nothing is serialised to disk and
the model is not re-sent per task); only index ranges go in and result tensors come back.
Shards are cut on multiples of the batch size, so every worker processes exactly the batches
the serial run would: the result equals the serial one (same operations on the same batches;
each worker uses one thread, so it does not oversubscribe the cores).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..influence import scores
from ..objective import Objective
from ..solvers import Solver

_STATE: dict[str, Any] = {}  # set in the parent right before the pool forks; read by the workers


def _init_worker() -> None:
    torch.set_num_threads(1)


def _score_range(bounds: tuple[int, int]) -> Tensor:
    obj, S, b = _STATE["objective"], _STATE["S"], _STATE["batch_size"]
    lo, hi = bounds
    return scores(obj, S, obj.train.take(slice(lo, hi)), method="grad", batch_size=b)


def _solve_range(bounds: tuple[int, int]) -> Tensor:
    lo, hi = bounds
    return _STATE["solver"].solve(_STATE["V"][lo:hi])


def _ranges(total: int, parts: int, step: int) -> list[tuple[int, int]]:
    """Split [0, total) into <= parts contiguous ranges whose starts are multiples of step."""
    blocks = -(-total // step)
    per = -(-blocks // parts)
    return [(i * per * step, min(total, (i + 1) * per * step)) for i in range(parts) if i * per * step < total]


def _map(fn, ranges: list[tuple[int, int]], workers: int, **state: Any) -> list[Tensor]:
    import torch.multiprocessing as mp

    _STATE.clear()
    _STATE.update(state)
    try:
        with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
            return pool.map(fn, ranges)
    finally:
        _STATE.clear()


def parallel_scores(objective: Objective, S: Tensor, *, workers: int = 2, batch_size: int | None = None) -> Tensor:
    """``influence.scores(objective, S, method="grad")`` over the training data, [k, n], with the
    n training points split into ``workers`` contiguous shards scored in separate processes."""
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}.")
    S = (S.unsqueeze(0) if S.dim() == 1 else S).to(objective.device, objective.dtype)
    b = batch_size or objective.batch_size
    if workers == 1:
        return scores(objective, S, method="grad", batch_size=b)
    parts = _map(_score_range, _ranges(objective.n, workers, b), workers, objective=objective, S=S, batch_size=b)
    return torch.cat(parts, 1)


def parallel_s_test(solver: Solver, V: Tensor, *, workers: int = 2) -> Tensor:
    """``solver.solve(V)`` ([m, p] -> [m, p]) with the m right-hand sides (test gradients) split
    into ``workers`` shards solved in separate processes. The solver must be fitted.

    Equal to the serial solve for solvers that treat columns independently: CG with
    ``block=False`` (per-column step sizes and stopping), exact, LiSSA (every shard replays the
    same seeded mini-batches). Block CG (the default) shares one Krylov space across the
    columns it is given, so shards agree with the serial solve to its tolerance, not bit for bit.
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}.")
    if solver.objective is None:
        raise InputError(f"{type(solver).__name__} is not fitted; call fit(objective) first.")
    V = V.unsqueeze(0) if V.dim() == 1 else V
    if workers == 1 or V.shape[0] == 1:
        return solver.solve(V)
    parts = _map(_solve_range, _ranges(V.shape[0], workers, 1), workers, solver=solver, V=V)
    return torch.cat(parts, 0)
