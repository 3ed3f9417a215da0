"""s_test and scoring shards of one ``Influence`` in worker processes (torch.multiprocessing, fork).

It wraps a fitted ``Influence`` from outside: workers inherit it by ``fork`` (nothing is
serialised to disk and the model is not re-sent per task); only index ranges go in and result
tensors come back. Scoring shards are cut on multiples of the batch size, so every worker
processes exactly the batches the serial run would: the result equals the serial one (same
operations on the same batches; each worker uses one thread, so it does not oversubscribe the
cores).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..data import DataLike
from ..errors import InputError
from ..influence import Influence

_STATE: dict[str, Any] = {}  # set in the parent right before the pool forks; read by the workers


def _init_worker() -> None:
    torch.set_num_threads(1)


def _score_range(bounds: tuple[int, int]) -> Tensor:
    lo, hi = bounds
    return _STATE["influence"].scores(_STATE["S"], index=torch.arange(lo, hi), method="grad")


def _solve_range(bounds: tuple[int, int]) -> Tensor:
    lo, hi = bounds
    return _STATE["influence"].solve(_STATE["G"][lo:hi])


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


def _check(workers: int) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be an int >= 1, got {workers!r}.")


def parallel_scores(influence: Influence, S: Tensor, *, workers: int = 2) -> Tensor:
    """``influence.scores(S, method="grad")`` over the training data, [k, n], with the n training
    points split into ``workers`` contiguous shards scored in separate processes. Raw scores,
    as ``Influence.scores`` (signs: ``influencekit.convention``)."""
    _check(workers)
    S = S.unsqueeze(0) if S.dim() == 1 else S
    if workers == 1:
        return influence.scores(S, method="grad")
    b = influence.batch_size  # shards start on the serial run's batch boundaries
    return torch.cat(_map(_score_range, _ranges(influence.n, workers, b), workers, influence=influence, S=S), 1)


def parallel_s_test(influence: Influence, test_or_G: DataLike | Tensor, *, workers: int = 2) -> Tensor:
    """s_test = (H + dI)^{-1} grad L(z_test) [m, p] as ``influence.s_test``, for test data or for
    test gradients G [m, p] (or [p]), with the m right-hand sides split into ``workers`` shards
    solved in separate processes. The influence is fitted first, in this process, so the
    workers inherit the fitted curvature.

    Equal to the serial solve for solvers that treat columns independently: CG with
    ``block=False`` (per-column step sizes and stopping), exact, LiSSA (every shard replays the
    same seeded mini-batches). Block CG (the default) shares one Krylov space across the
    columns it is given, so shards agree with the serial solve to its tolerance, not bit for bit.
    """
    _check(workers)
    G = influence.test_gradients(test_or_G) if not isinstance(test_or_G, Tensor) else test_or_G
    G = G.unsqueeze(0) if G.dim() == 1 else G
    if G.dim() != 2 or G.shape[1] != influence.p:
        raise InputError(f"test gradients must be [m, p] with p = {influence.p} (parameters in scope), "
                         f"got {tuple(G.shape)}.")
    influence.fit()
    if workers == 1 or G.shape[0] == 1:
        return influence.solve(G)
    return torch.cat(_map(_solve_range, _ranges(G.shape[0], workers, 1), workers, influence=influence, G=G), 0)
