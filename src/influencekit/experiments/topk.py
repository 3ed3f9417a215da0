"""The most helpful and harmful training points of chosen test points, over all n training points
or over a few candidates per test point (FastIF's prefilters, ``Influence.top_k``).

Scores are I_up,loss (``influencekit.convention``); each listed point also carries its predicted
leave-one-out change, loo = -(1/n) I_up,loss.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..convention import SIGN_CONVENTION
from ..errors import InputError
from ..influence import Influence, TopK
from .problems import Problem


@dataclass
class Ranked:
    """One listed training point: its row, label, I_up,loss and predicted loo change."""

    train_index: int
    label: Any
    up_loss: float
    loo: float


@dataclass
class TopLists:
    """The top lists of one test point: ``harmful`` largest I_up,loss first, ``helpful`` most
    negative first."""

    test_index: int
    label: Any
    harmful: list[Ranked]
    helpful: list[Ranked]


@dataclass
class TopKResult:
    """``top`` harmful and ``top`` helpful training points per test point.

    ``candidates``: training points offered per test point by the prefilter (None: all n
    scored); ``scored``: distinct training points whose influence was computed; ``seconds``:
    wall-clock per stage; ``index_rebuilt``: whether the prefilter's index was built (False:
    reused from ``index_dir``).
    """

    problem: str
    notes: str
    n: int
    p: int
    settings: dict[str, Any]
    prefilter: str | None
    candidates: int | None
    index_kind: str | None
    index_path: str | None
    scored: int
    tests: list[TopLists]
    seconds: dict[str, float] = field(default_factory=dict)
    index_rebuilt: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"convention": SIGN_CONVENTION, **asdict(self)}

    def report(self, page) -> None:
        """Add one table per test point to an ``experiments.report`` page."""
        how = "all training points scored" if self.prefilter is None else \
            f"{self.prefilter} prefilter, {self.candidates} candidates per test point, {self.scored} scored"
        page.heading(f"Most harmful and helpful training points: {self.problem}")
        page.text(f"{self.notes + '; ' if self.notes else ''}n = {self.n}, p = {self.p}; {how}.")
        for t in self.tests:
            rows = [[h.train_index, h.label, h.up_loss, g.train_index, g.label, g.up_loss]
                    for h, g in zip(t.harmful, t.helpful)]
            page.table(["harmful: train idx", "label", "I_up,loss", "helpful: train idx", "label", "I_up,loss"],
                       rows, caption=f"test point {t.test_index} (label {t.label})")


def run(problem: Problem, test_index: list[int], top: int = 10, *, prefilter: str | None = None,
        candidates: int = 1000, index_kind: str = "flat", index_dir: str | Path | None = None,
        solver: str | None = None, workers: int = 1, progress: bool = False, **solver_options: Any) -> TopKResult:
    """The ``top`` most harmful and helpful training points of the test points ``test_index``.

    ``prefilter`` None scores all n training points (with ``workers`` > 1 in that many processes,
    ``scale.pool``); ``"knn"`` / ``"grad"`` only ``candidates`` per test point (``Influence.top_k``),
    whose index is saved in and reused from ``index_dir``. ``solver`` and ``solver_options``
    (``damping=`` included) override the problem's defaults. ``top`` larger than n lists all n.
    """
    if prefilter is not None and workers > 1:
        raise InputError("workers > 1 splits the scoring of all n training points over processes; with a prefilter "
                         "only the candidates are scored, in this process: use workers=1 or prefilter=None.")
    inf = problem.influence(solver, **solver_options)
    top = min(top, inf.n)
    test = problem.test_at(test_index)
    path = Path(index_dir) / f"{problem.name}-{prefilter}-{index_kind}" if index_dir and prefilter else None
    t0 = time.perf_counter()
    if prefilter is None and workers > 1:
        best = _top_k_in_processes(inf, test, top, workers)
    else:
        best = inf.top_k(test, top, prefilter=prefilter, candidates=candidates, index_kind=index_kind,
                         index_path=path, progress=progress)
    seconds = {"top_k": time.perf_counter() - t0}
    ytr = problem.train[1]

    def ranked(index, values) -> list[Ranked]:
        return [Ranked(int(i), ytr[int(i)].tolist(), float(v), -float(v) / inf.n) for i, v in zip(index, values)]

    tests = [TopLists(j, problem.test[1][j].tolist(), ranked(best.harmful_index[row], best.harmful[row]),
                       ranked(best.helpful_index[row], best.helpful[row])) for row, j in enumerate(test_index)]
    c = None if best.candidates is None else int(best.candidates.shape[1])
    return TopKResult(problem.name, problem.notes, inf.n, inf.p, inf.settings(), prefilter, c,
                      index_kind if prefilter else None, str(path) if path else None, best.scored, tests, seconds,
                      best.index_rebuilt)


def _top_k_in_processes(inf: Influence, test, top: int, workers: int) -> TopK:
    """``inf.top_k(test, top)`` with s_test and the scores of all n points computed in ``workers``
    processes."""
    from ..fastif.prefilter import top_influential
    from ..scale.pool import parallel_s_test, parallel_scores

    up = -parallel_scores(inf, parallel_s_test(inf, test, workers=workers), workers=workers)
    return TopK(**top_influential(up, None, top), scored=inf.n)
