"""Influence against actual leave-one-out retraining: the check that a problem's influence is right.

For one test point, predict the change of its loss when each training point is removed,
loo = -(1/n) I_up,loss (``influencekit.convention``), and retrain without each of the k points
with the largest |loo|; the Pearson and Spearman correlations of predicted and actual changes
say how far influence can be trusted on this problem.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from ..convention import SIGN_CONVENTION
from ..errors import InputError
from ..retrain import loo_retrain
from .problems import Problem


@dataclass
class ValidateResult:
    """Predicted against actual leave-one-out changes of one test point's loss.

    ``predicted`` and ``actual`` [k] are aligned with ``train_index`` (the k points with the
    largest |predicted|, largest first); ``seconds``: influence (fit + s_test + scoring);
    ``retrain_seconds``: the k retrains. With ``newton`` problems, the Newton-step estimate too.
    """

    problem: str
    solver: str
    settings: dict[str, Any]
    n: int
    p: int
    test_index: int
    train_index: list[int]
    predicted: list[float]
    actual: list[float]
    pearson: float
    spearman: float
    seconds: float
    retrain_seconds: float
    notes: str = ""
    newton: dict[str, Any] = field(default_factory=dict)  # pearson, spearman, predicted (Newton-step LOO)

    @property
    def k(self) -> int:
        return len(self.train_index)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        newton = d.pop("newton")
        extra = {"pearson_newton": newton["pearson"], "spearman_newton": newton["spearman"],
                 "predicted_newton": newton["predicted"]} if newton else {}
        return {**d, **extra, "k": self.k, "convention": SIGN_CONVENTION}

    def report(self, page) -> None:
        """Add this check's section to an ``experiments.report`` page: the correlations and the
        predicted-against-actual scatter."""
        from .report import loo_figure

        page.heading(f"Influence against leave-one-out retraining: {self.problem}")
        page.text(f"{self.notes + '; ' if self.notes else ''}n = {self.n}, p = {self.p}; solver {self.settings}; "
                  f"test point {self.test_index}, the {self.k} training points of largest |predicted| retrained.")
        rows = [["influence (-(1/n) I_up,loss)", self.pearson, self.spearman]]
        if self.newton:
            rows.append(["Newton step (own curvature removed)", self.newton["pearson"], self.newton["spearman"]])
        page.table(["estimate", "Pearson R", "Spearman"], rows)
        page.figure(loo_figure(self.predicted, self.actual, f"{self.problem}, Pearson R = {self.pearson:.3f}"),
                    "Predicted change of the test loss against the actual change after retraining.")


def run(problem: Problem, solver: str | None = None, k: int = 50, test_index: int | None = None,
        **solver_options: Any) -> ValidateResult:
    """Predicted -(1/n) I_up,loss against actual leave-one-out retraining on the k training
    points with the largest |influence| for one test point (default: the highest-loss one).

    ``solver`` (default: the problem's) and ``solver_options`` (``damping=`` included) override the
    problem's defaults; retraining follows the problem's recipe (``Problem.retrain``, else
    ``loo_retrain`` with ``Problem.retrain_options``).
    """
    from scipy.stats import pearsonr, spearmanr

    if not isinstance(k, int) or k < 2:
        raise InputError(f"k must be an integer >= 2 (a correlation needs two points), got {k!r}.")
    j = int(problem.test_losses().argmax()) if test_index is None else int(test_index)
    test = problem.test_at([j])
    t0 = time.perf_counter()
    inf = problem.influence(solver, **solver_options)
    with warnings.catch_warnings():
        if not problem.expect_stationary:  # the problem says why; do not warn about it
            warnings.filterwarnings("ignore", message="the training gradient norm")
        pred = inf.loo(test)[0]
    seconds = time.perf_counter() - t0
    top = pred.abs().argsort(descending=True)[:k].tolist()
    t1 = time.perf_counter()
    if problem.retrain is not None:
        actual = problem.retrain(top, test)[0]
    else:
        actual = loo_retrain(inf, top, test, **problem.retrain_options)[0]
    retrain_seconds = time.perf_counter() - t1
    p, a = pred[top].double().numpy(), actual.double().numpy()
    newton: dict[str, Any] = {}
    if problem.newton:
        q = inf.loo_newton(test, top)[0].numpy()
        newton = {"pearson": float(pearsonr(q, a).statistic), "spearman": float(spearmanr(q, a).statistic),
                  "predicted": q.tolist()}
    return ValidateResult(problem.name, solver or problem.solver, inf.settings(), inf.n, inf.p, j,
                          top, p.tolist(), a.tolist(), float(pearsonr(p, a).statistic),
                          float(spearmanr(p, a).statistic), seconds, retrain_seconds, problem.notes, newton)
