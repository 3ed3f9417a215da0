"""``experiments.tune``: the cheapest setting found matches the reference, and costs are counted."""

import json

import pytest
import torch

from influencekit.experiments import problems, tune
from influencekit.experiments.report import Page


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    return problems.make("digits-logreg")


def test_the_search_stops_at_the_first_passing_setting_in_order_of_cost(problem):
    r = tune.run(problem, [0, 1], target=0.99, damping=1e-3, sample=100)
    assert r.best is not None and r.best == r.trials[-1] and r.best["pearson"] >= 0.99
    assert not any(t["passed"] for t in r.trials[:-1])
    costs = [t["predicted_hvps"] for t in r.trials]
    assert costs == sorted(costs)
    assert r.reference["solver"] == "cg" and r.reference["damping"] == 1e-3
    assert all(t["options"]["damping"] in (1e-3, 1e-2) for t in r.trials)
    lissa = [t for t in r.trials if t["solver"] == "lissa" and not t["error"]]
    for t in lissa:  # LiSSA's count is exact: depth x min(batch, n) x repeats example-HVPs per test point
        o = t["options"]
        assert t["hvps"] == o["depth"] * min(o["batch_size"], problem.influence().n) * o["repeats"]
    out = json.loads(json.dumps(r.to_json()))
    assert "positive = harmful" in out["convention"] and out["test_index"] == [0, 1]
    page = Page("tune")
    r.report(page)
    assert page.n_tables == 1


def test_cg_can_be_left_out_of_the_grid(problem):
    r = tune.run(problem, [0], target=0.5, sample=50, cg=False)
    assert r.trials and all(t["solver"] == "lissa" for t in r.trials)
