"""Pick the cheapest inverse-HVP setting whose influence scores match a high-quality reference.

Each candidate setting (solver name + options) solves s_test for a few test points; its scores
grad L(z_i)^T s_test over a fixed sample of training points are correlated (Pearson, per test
point, then averaged) with the reference's. Cost is counted as **example-HVPs per test point**:
every Hessian-vector product on one training example for one right-hand side counts 1 (a
LiSSA run costs depth x batch_size x repeats, a CG iteration costs n). The count is exact
(it instruments ``Objective.hvp_batch``) and machine-independent; measured seconds are reported
beside it and can be chosen as the criterion with ``cost="seconds"``.

Candidates are tried in increasing order of their predicted cost; by default the search stops at
the first one that reaches the target, which is then the cheapest passing setting.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InfluenceError, InputError
from ..influence import Influence, scores
from ..objective import Objective
from ..solvers import make_solver

#: LiSSA's constructor defaults (depth 1000, batch 128, one repeat): the baseline ``tune`` beats.
DEFAULT_LISSA = {"depth": 1000, "batch_size": 128, "repeats": 1}


@dataclass
class Trial:
    """One tried setting and how it did (a row of the table ``tune`` returns)."""

    solver: str
    options: dict[str, Any]
    predicted_hvps: float  # example-HVPs per test point expected from the settings
    hvps: float = float("nan")  # example-HVPs per test point actually counted
    seconds: float = float("nan")  # wall-clock of fit + solve (all test points)
    pearson: float = float("nan")  # mean over test points of Pearson(scores, reference scores)
    min_pearson: float = float("nan")
    passed: bool = False
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def default_grid(n: int, damping: float, scale: float | None = None) -> list[tuple[str, dict[str, Any]]]:
    """LiSSA depth x batch x repeats, CG iteration caps, each at the given damping and 10x it."""
    grid: list[tuple[str, dict[str, Any]]] = []
    common = {} if scale is None else {"scale": scale}
    for d in (damping, 10 * damping):
        for depth in (50, 100, 200, 500, 1000):
            for batch in (16, 64, 128, 512):
                for repeats in (1, 2):
                    grid.append(("lissa", {"damping": d, "depth": depth, "batch_size": batch, "repeats": repeats,
                                           **common}))
        for iters in (5, 10, 20, 50, 100):
            grid.append(("cg", {"damping": d, "max_iter": iters, "tol": 1e-10}))
    return grid


def predicted_hvps(solver: str, options: dict[str, Any], n: int) -> float:
    """Example-HVPs per test point a setting will use (upper bound for CG, which may stop early)."""
    if solver == "lissa":
        o = {**DEFAULT_LISSA, **options}
        return float(o["depth"] * min(o["batch_size"], n) * o["repeats"])
    if solver == "cg":
        return float(options.get("max_iter") or 1000) * n
    return float("inf")


def estimate_scale(objective: Objective, damping: float, sample: int = 5000, steps: int = 15, seed: int = 0) -> float:
    """LiSSA's scale, 1.5 (lambda_max(H) + damping), with lambda_max from Lanczos on the Hessian
    of a random sample of the training data (the full data's Hessian is its average over such
    samples; 15 passes over 5,000 points instead of over all n). Shared by all LiSSA trials."""
    from ..curvature import spectrum

    n = objective.n
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(sample, n)].sort().values
    sub = Objective(objective.model, objective.loss_fn, objective.train.take(idx), l2=objective.l2,
                    params=objective.names, batch_size=objective.batch_size, dtype=objective.dtype,
                    device=objective.device)
    return 1.5 * (spectrum(sub, steps=steps, seed=seed).max_eigenvalue + damping)


class _Counter:
    """Counts example-HVPs (examples x right-hand sides) through ``objective.hvp_batch``."""

    def __init__(self, objective: Objective):
        self.objective, self.count = objective, 0
        self._orig = objective.hvp_batch

    def __enter__(self) -> _Counter:
        def counted(V, x, y, scale, weights=None):
            self.count += x.shape[0] * (V.shape[0] if V.dim() == 2 else 1)
            return self._orig(V, x, y, scale, weights)

        self.objective.hvp_batch = counted  # instance attribute shadows the method
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.objective.hvp_batch


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def tune(objective: Objective | Influence, test_gradients: Tensor, reference: Tensor, *,
         grid: list[tuple[str, dict[str, Any]]] | None = None, damping: float = 0.0, target: float = 0.95,
         sample: int = 2000, cost: str = "hvps", exhaustive: bool = False, seed: int = 0,
         progress: bool = False) -> tuple[Trial | None, list[Trial]]:
    """Search inverse-HVP settings against a reference.

    Args:
        objective: the training objective, or an ``Influence`` (its objective is used; every trial
            fits a solver of its own on it).
        test_gradients: grad L(z_test) [m, p] of a few test points (3-10 is enough).
        reference: a high-quality s_test [m, p] for those points (e.g. CG to tol 1e-8).
        grid: (solver name, options) candidates; default ``default_grid`` (needs ``damping``).
        target: the Pearson the chosen setting must reach (mean over the m test points).
        sample: training points the scores are correlated on (a fixed random sample).
        cost: ``hvps`` (example-HVPs per test point, default) or ``seconds`` (measured).
        LiSSA candidates without a ``scale`` share one from ``estimate_scale`` (not counted in hvps).
        exhaustive: try every candidate; otherwise stop at the first passing one in increasing
            predicted cost (with ``cost="seconds"`` the search is always exhaustive).

    Returns (the cheapest passing trial or None, every trial in the order tried).
    """
    if isinstance(objective, Influence):
        objective = objective.objective
    if cost not in ("hvps", "seconds"):
        raise InputError(f"cost must be 'hvps' or 'seconds', got {cost!r}.")
    if test_gradients.shape != reference.shape:
        raise InputError(f"reference {tuple(reference.shape)} must match test_gradients {tuple(test_gradients.shape)}.")
    if not 0 < target <= 1:
        raise InputError(f"target Pearson must be in (0, 1], got {target}.")
    n = objective.n
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(sample, n)].sort().values
    sub = objective.train.take(idx)
    ref_scores = scores(objective, reference, sub, method="grad")
    grid = grid if grid is not None else default_grid(n, damping)
    if any(name == "lissa" and opts.get("scale", "auto") == "auto" for name, opts in grid):
        # one scale for every LiSSA trial (per-trial Lanczos on all n would cost more than the trials)
        top = max(o.get("damping", 0.0) for name, o in grid if name == "lissa")
        scale = estimate_scale(objective, top, seed=seed)
        grid = [(name, {**o, "scale": scale} if name == "lissa" and o.get("scale", "auto") == "auto" else o)
                for name, o in grid]
    order = sorted(grid, key=lambda so: predicted_hvps(so[0], so[1], n))
    trials: list[Trial] = []
    iterator = order
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(order, desc="tune", unit="setting")
    for name, opts in iterator:
        t = Trial(name, dict(opts), predicted_hvps(name, opts, n))
        trials.append(t)
        try:
            solver = make_solver(name, **opts)
            t0 = time.perf_counter()
            with _Counter(objective) as c, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a capped CG warns by design here
                solver.fit(objective)
                S = solver.solve(test_gradients)
            t.seconds = time.perf_counter() - t0
            t.hvps = c.count / test_gradients.shape[0]
            r = _pearson_rows(scores(objective, S, sub, method="grad"), ref_scores)
            t.pearson, t.min_pearson = r.mean().item(), r.min().item()
            t.passed = bool(t.pearson >= target)
            if getattr(solver, "scale", None) is not None:
                t.extra["scale"] = solver.scale
        except InfluenceError as e:  # divergence / negative curvature: this setting is unusable
            t.error = f"{type(e).__name__}: {str(e)[:160]}"
        if t.passed and cost == "hvps" and not exhaustive:
            break
    passing = [t for t in trials if t.passed]
    best = min(passing, key=lambda t: t.hvps if cost == "hvps" else t.seconds) if passing else None
    return best, trials
