"""The cheapest inverse-HVP setting whose influence scores match a high-quality reference (FastIF's
step 2), with the table of every setting tried. The method is ``fastif.tune``; this runs it on a
problem: the reference s_test, the grid around the problem's damping, the result to report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ..convention import SIGN_CONVENTION
from .problems import Problem

#: the reference settings: CG to a tight tolerance (small models), or one long LiSSA run (large n,
#: cheaper) with another seed than the trials (seed 0)
REFERENCES = {"cg": {"tol": 1e-8, "max_iter": 1000}, "lissa": {"depth": 4000, "batch_size": 256, "repeats": 1,
                                                               "seed": 1}}


@dataclass
class TuneResult:
    """Every setting tried (``trials``, rows of ``fastif.tune.Trial``) and the cheapest one whose
    mean Pearson against the reference reaches ``target`` (``best``; None if none did). Cost is in
    ``cost_unit``: example-HVPs per test point (``hvps``) or measured ``seconds``."""

    problem: str
    notes: str
    n: int
    p: int
    test_index: list[int]
    target: float
    cost_unit: str
    reference: dict[str, Any]  # the reference solver's settings and its seconds
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"convention": SIGN_CONVENTION, **asdict(self)}

    def report(self, page) -> None:
        """Add the table of tried settings to an ``experiments.report`` page."""
        page.heading(f"Cheapest inverse-HVP setting: {self.problem}")
        b = self.best
        chosen = "none reached the target" if b is None else \
            f"chosen: {b['solver']} {options_text(b['options'])} ({b['hvps']:.0f} example-HVPs per test point)"
        page.text(f"{self.notes + '; ' if self.notes else ''}target Pearson >= {self.target} against "
                  f"{self.reference}; {chosen}.")
        page.table(["solver", "options", "example-HVPs / test", "seconds", "Pearson", "min Pearson", "passed"],
                   [[t["solver"], options_text(t["options"]), t["hvps"], t["seconds"], t["pearson"], t["min_pearson"],
                     t["passed"]] for t in self.trials])


def options_text(options: dict[str, Any]) -> str:
    """Solver options as one short line (floats to 3 significant digits)."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())


def run(problem: Problem, test_index: list[int], *, target: float = 0.95, damping: float | None = None,
        reference: str = "cg", sample: int = 2000, cost: str = "hvps", exhaustive: bool = False,
        cg: bool = True, seed: int = 0, progress: bool = False) -> TuneResult:
    """Search LiSSA and CG settings (``fastif.tune.default_grid`` at ``damping``, default the
    problem's, and 10x it, plus LiSSA's defaults as the baseline; ``cg=False`` leaves CG out)
    for the cheapest one whose scores on ``sample`` training points keep Pearson >= ``target``
    against the ``reference`` solver (``REFERENCES``) on the test points ``test_index``."""
    from ..fastif.tune import DEFAULT_LISSA, default_grid, tune

    t0 = time.perf_counter()
    damping = problem.damping if damping is None else damping
    inf = problem.influence(reference, damping=damping, **REFERENCES[reference])
    test = problem.test_at(test_index)
    G = inf.test_gradients(test)
    t = time.perf_counter()
    S = inf.solve(G)
    ref_seconds = time.perf_counter() - t
    grid = default_grid(inf.n, damping)
    grid.append(("lissa", {"damping": damping, **DEFAULT_LISSA}))  # the defaults, as the baseline
    if not cg:
        grid = [g for g in grid if g[0] != "cg"]
    best, trials = tune(inf, G, S, grid=grid, damping=damping, target=target, sample=sample,
                        cost=cost, exhaustive=exhaustive, seed=seed, progress=progress)
    return TuneResult(problem.name, problem.notes, inf.n, inf.p, list(test_index), target, cost,
                      {**inf.settings()["solver"], "seconds": ref_seconds}, best.row() if best else None,
                      [tr.row() for tr in trials], time.perf_counter() - t0)
