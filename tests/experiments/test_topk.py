"""``experiments.topk`` on bundled digits: top lists ordered as documented with the leave-one-out
scaling, the k-NN prefilter with every point a candidate equal to the full answer, the gradient
prefilter finding the full top lists among a fifth of the points, and a saved index reused."""

from __future__ import annotations

import json

import pytest
import torch

import influencekit as ik
from influencekit.experiments import problems, topk

TESTS, TOP = [0, 4], 5


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    return problems.make("digits-mlp", n_train=200, epochs=3)


@pytest.fixture(scope="module")
def full(problem):
    return topk.run(problem, TESTS, TOP, solver="exact")


def lists(result, kind):
    return [[(e.train_index, e.up_loss) for e in getattr(t, kind)] for t in result.tests]


def test_top_lists_are_the_extremes_of_up_loss_with_the_loo_scaling(problem, full):
    up = problem.influence("exact").up_loss(problem.test_at(TESTS))
    assert full.prefilter is None and full.candidates is None and full.scored == full.n == 200
    for row, t in enumerate(full.tests):
        assert t.test_index == TESTS[row] and t.label == int(problem.test[1][TESTS[row]])
        order = up[row].argsort(descending=True)
        assert [e.train_index for e in t.harmful] == order[:TOP].tolist()
        assert [e.train_index for e in t.helpful] == order.flip(0)[:TOP].tolist()
        assert [e.up_loss for e in t.harmful] == pytest.approx(up[row, order[:TOP]].tolist(), rel=1e-9)
        assert t.harmful[0].up_loss > 0 > t.helpful[0].up_loss  # some point hurts and some helps each test point
        for e in t.harmful + t.helpful:
            assert e.loo == pytest.approx(-e.up_loss / 200)
            assert e.label == int(problem.train[1][e.train_index])


def test_knn_prefilter_with_every_point_a_candidate_reproduces_the_full_answer(problem, full, tmp_path):
    knn = topk.run(problem, TESTS, TOP, solver="exact", prefilter="knn", candidates=200, index_dir=tmp_path)
    assert knn.candidates == 200 and knn.index_path == str(tmp_path / "digits-mlp-knn-flat")
    for kind in ("harmful", "helpful"):
        for a, b in zip(lists(full, kind), lists(knn, kind)):
            assert [i for i, _ in a] == [i for i, _ in b]
            assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-9)


def test_a_saved_index_is_reused_while_model_and_data_are_unchanged(problem, tmp_path):
    first = topk.run(problem, TESTS, TOP, solver="exact", prefilter="knn", candidates=20, index_dir=tmp_path)
    saved = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert saved
    again = topk.run(problem, TESTS, TOP, solver="exact", prefilter="knn", candidates=20, index_dir=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == saved
    assert again.scored <= 40
    assert first.index_rebuilt is True and again.index_rebuilt is False


def test_gradient_prefilter_finds_the_full_top_lists_with_a_fifth_of_the_points(problem, full):
    # 40 candidates of 200 (20 harmful + 20 helpful by the last layer's term of I_up,loss)
    grad = topk.run(problem, TESTS, TOP, solver="exact", prefilter="grad", candidates=40)
    assert grad.prefilter == "grad" and grad.candidates == 40 and grad.scored <= 80
    found = total = 0
    for kind in ("harmful", "helpful"):
        for a, b in zip(lists(full, kind), lists(grad, kind)):
            truth = dict(a)
            for i, v in b:  # every score reported is the exact full score of that point
                if i in truth:
                    assert v == pytest.approx(truth[i], rel=1e-9)
            found += len(truth.keys() & {i for i, _ in b})
            total += len(truth)
    assert found / total >= 0.8


def test_worker_processes_give_the_serial_answer(problem, full):
    par = topk.run(problem, TESTS, TOP, solver="exact", workers=2)
    for kind in ("harmful", "helpful"):
        for a, b in zip(lists(full, kind), lists(par, kind)):
            assert [i for i, _ in a] == [i for i, _ in b]
            assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-9)


def test_result_is_json_with_the_convention_and_reports_a_table_per_test_point(full):
    out = json.loads(json.dumps(full.to_json()))
    assert "positive = harmful" in out["convention"] and out["problem"] == "digits-mlp"
    assert [t["test_index"] for t in out["tests"]] == TESTS and len(out["tests"][0]["harmful"]) == TOP

    class Page:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *a, **k: self.calls.append((name, a))

    page = Page()
    full.report(page)
    assert [c[0] for c in page.calls] == ["heading", "text", "table", "table"]
    assert len(page.calls[2][1][1]) == TOP  # one row per rank


def test_asking_for_more_points_than_there_are_lists_all_of_them_in_one_process_or_several(problem):
    one = topk.run(problem, TESTS[:1], 500, solver="exact")
    two = topk.run(problem, TESTS[:1], 500, solver="exact", workers=2)
    for a, b in ((one, two),):
        assert len(a.tests[0].harmful) == len(b.tests[0].harmful) == 200
        assert [e.train_index for e in a.tests[0].harmful] == [e.train_index for e in b.tests[0].harmful]


def test_processes_with_a_prefilter_are_refused_not_ignored(problem):
    with pytest.raises(ik.InputError, match="workers=1 or prefilter=None"):
        topk.run(problem, TESTS, TOP, prefilter="grad", candidates=40, workers=2)
