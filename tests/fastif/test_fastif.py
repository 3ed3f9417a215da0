"""FastIF: the k-NN prefilter finds the true neighbours, prefiltered scores are the full scores on
the candidates, recall counts what it should, the index is reused only for the same model and
data, and tune picks the cheapest passing setting."""

from __future__ import annotations

import copy

import pytest
import torch

from influencekit import Objective, make_solver
from influencekit.errors import InputError
from influencekit.experiments.models import MLP
from influencekit.fastif import (
    KNNIndex,
    candidate_scores,
    embed,
    fingerprint,
    load_or_build,
    recall_at_k,
    top_influential,
    tune,
)
from influencekit.fastif.gradients import (
    gradient_candidates,
    gradient_embedding,
    gradient_index,
    head_block,
    head_params,
)
from influencekit.influence import scores


@pytest.fixture(scope="module")
def problem():
    """A small float64 MLP (8 -> 6 tanh -> 3, untrained) on 150 random points. Its Hessian has
    eigenvalues down to about -0.12, so the solvers below use damping 0.2."""
    torch.manual_seed(0)  # the MLP's initial weights: independent of which tests ran before
    g = torch.Generator().manual_seed(0)
    X = torch.randn(150, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (150,), generator=g)
    model = MLP(8, (6,), 3).double().eval()
    obj = Objective(model, "cross_entropy", (X, y), l2=0.1, batch_size=32)
    Xt, yt = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g)
    return model, obj, (X, y), (Xt, yt)


def test_embed_defaults_to_the_penultimate_features(problem):
    model, _, (X, y), _ = problem
    F = embed(model, (X, y), batch_size=64)
    with torch.no_grad():
        assert torch.allclose(F, model.features(X).float())
    assert torch.equal(embed(None, (X, y), fn=lambda x: 2 * x), (2 * X).float())


def test_flat_index_returns_the_true_nearest_neighbours_in_order():
    g = torch.Generator().manual_seed(1)
    F, Q = torch.randn(500, 6, generator=g), torch.randn(7, 6, generator=g)
    D, idx = KNNIndex(F).search(Q, 20)
    d2 = torch.cdist(Q.double(), F.double()) ** 2
    assert torch.equal(idx, d2.argsort(1)[:, :20])
    assert torch.allclose(D.double(), d2.gather(1, idx), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_true_neighbours(kind, metric):
    g = torch.Generator().manual_seed(2)
    F, Q = torch.randn(2000, 6, generator=g), torch.randn(10, 6, generator=g)
    _, idx = KNNIndex(F, kind=kind, metric=metric, nprobe=16).search(Q, 10)
    best = (torch.cdist(Q, F) ** 2).argsort(1) if metric == "l2" else (Q @ F.T).argsort(1, descending=True)
    true = best[:, :10]
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(idx, true))
    assert hits / true.numel() >= 0.9


def test_prefiltered_scores_equal_the_full_scores_on_the_candidates(problem):
    _, obj, _, test = problem
    S = torch.randn(5, obj.p, dtype=torch.float64)
    full = scores(obj, S, method="grad")  # [5, n]
    cand = torch.stack([torch.randperm(obj.n)[:40] for _ in range(5)])  # overlapping rows
    got = candidate_scores(obj, S, cand, batch_size=16)
    assert torch.allclose(got, full.gather(1, cand), rtol=1e-12, atol=1e-14)
    with pytest.raises(InputError, match="candidate indices"):
        candidate_scores(obj, S, cand + obj.n)


def test_top_influential_orders_harmful_descending_and_helpful_ascending():
    up = torch.tensor([[0.5, -2.0, 3.0, -0.25, 1.0]])
    cand = torch.tensor([[10, 11, 12, 13, 14]])
    best = top_influential(up, cand, top=2)
    assert best["harmful_index"].tolist() == [[12, 14]] and best["harmful"].tolist() == [[3.0, 1.0]]
    assert best["helpful_index"].tolist() == [[11, 13]] and best["helpful"].tolist() == [[-2.0, -0.25]]


def test_recall_counts_the_top_points_inside_the_first_k_neighbours():
    # n = 10; test 0: harmful top-2 = {9, 8}, helpful top-2 = {0, 1}; test 1: harmful {0, 1}, helpful {9, 8}
    up = torch.stack([torch.arange(10.0), -torch.arange(10.0)])
    nbr = torch.tensor([[9, 0, 5, 8, 1, 2, 3, 4, 6, 7],
                        [5, 6, 7, 2, 3, 4, 0, 1, 9, 8]])
    r = recall_at_k(up, nbr, ks=(2, 4, 10), top=2)
    # k=2: test 0 has {9} of harmful, {0} of helpful; test 1 none
    assert r[2]["harmful"] == pytest.approx(0.25) and r[2]["helpful"] == pytest.approx(0.25)
    # k=4: test 0 has {9, 8} and {0}; test 1 none
    assert r[4]["harmful"] == pytest.approx(0.5) and r[4]["helpful"] == pytest.approx(0.25)
    assert r[10]["mean"] == 1.0
    assert r[4]["per_test_harmful"] == [1.0, 0.0]


def test_index_is_saved_reloaded_and_rebuilt_only_when_the_fingerprint_changes(problem, tmp_path):
    model, _, (X, y), (Xt, _) = problem
    calls = []

    def features():
        calls.append(1)
        return embed(model, (X, y))

    path = tmp_path / "idx" / "mlp-flat"
    fp = fingerprint(model, X, y)
    a, rebuilt = load_or_build(path, features, fp)
    assert rebuilt and path.with_suffix(".faiss").exists() and path.with_suffix(".json").exists()
    b, rebuilt = load_or_build(path, features, fp)
    assert not rebuilt and len(calls) == 1
    q = embed(model, (Xt, Xt))
    assert torch.equal(a.search(q, 5)[1], b.search(q, 5)[1])

    changed = copy.deepcopy(model)  # one weight moved by 1e-12 -> other fingerprint -> rebuilt
    with torch.no_grad():
        changed.head.bias[0] += 1e-12
    assert fingerprint(changed, X, y) != fp and fingerprint(model, X[:-1], y[:-1]) != fp
    _, rebuilt = load_or_build(path, features, fingerprint(changed, X, y))
    assert rebuilt and len(calls) == 2
    _, rebuilt = load_or_build(path, features, fingerprint(changed, X, y), kind="hnsw")  # other kind
    assert rebuilt
    path.with_suffix(".faiss").write_bytes(b"truncated")  # corrupt file: rebuilt, not a crash
    _, rebuilt = load_or_build(path, features, fingerprint(changed, X, y), kind="hnsw")
    assert rebuilt


def test_tune_returns_the_cheapest_setting_reaching_the_target(problem):
    _, obj, _, (Xt, yt) = problem
    G = obj.grads(Xt, yt)[:3]
    reference = make_solver("exact", damping=0.2).fit(obj).solve(G)
    grid = [("lissa", {"damping": 0.2, "depth": dp, "batch_size": 64, "repeats": 1, "scale": 1.5})
            for dp in (1, 200, 10)]  # scale 1.5 > lambda_max(H) + 0.2 (about 0.92)
    best, trials = tune(obj, G, reference, grid=grid, target=0.995, sample=150)
    # tried in increasing cost; one step (Pearson about 0.965) misses the target, 10 steps (0.997) reach it
    assert [t.options["depth"] for t in trials][:2] == [1, 10]
    assert not trials[0].passed and trials[0].pearson < 0.995
    assert best is trials[-1] and best.options["depth"] == 10 and best.pearson >= 0.995
    # the counted cost is exactly depth x batch per test point
    assert best.hvps == 10 * 64
    assert len(trials) == 2  # stopped at the first passing setting


# ---- gradient prefilter: candidates by the last layer's term of I_up,loss ------------------------

def test_head_params_are_the_last_linear_layer(problem):
    model, *_ = problem
    assert head_params(model) == ["head.weight", "head.bias"]
    assert head_params(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))) == ["1.weight", "1.bias"]
    with pytest.raises(InputError, match="no nn.Linear"):
        head_params(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3)))


def test_gradient_embedding_is_the_last_layer_block_of_the_per_example_gradients(problem):
    _, obj, (X, y), _ = problem
    E = gradient_embedding(obj, batch_size=64)  # [n, p_head]
    G = obj.grads(X, y)  # [n, p]
    assert E.shape == (obj.n, 6 * 3 + 3)
    assert torch.allclose(E.double(), head_block(obj, G).double(), rtol=1e-5, atol=1e-6)


def test_inner_product_index_returns_the_largest_inner_products_first():
    g = torch.Generator().manual_seed(3)
    F, Q = torch.randn(400, 5, generator=g), torch.randn(4, 5, generator=g)
    D, idx = KNNIndex(F, metric="ip").search(Q, 15)
    ip = Q.double() @ F.double().T
    assert torch.equal(idx, ip.argsort(1, descending=True)[:, :15])
    assert torch.allclose(D.double(), ip.gather(1, idx), rtol=1e-4, atol=1e-4)


def test_gradient_candidates_are_the_top_harmful_and_helpful_by_the_last_layer_term(problem):
    _, obj, _, test = problem
    S = make_solver("cg", damping=0.2).fit(obj).solve(obj.grads(*test))
    E, Sh = gradient_embedding(obj), head_block(obj, S)
    cand = gradient_candidates(gradient_index(E), Sh, 20)  # [5, 20]: 10 harmful, 10 helpful, interleaved
    term = -(Sh.double() @ E.double().T)  # the head's part of I_up,loss [5, n]: > 0 harmful
    for j in range(5):
        assert set(cand[j, 0::2].tolist()) == set(term[j].topk(10).indices.tolist())
        assert set(cand[j, 1::2].tolist()) == set(term[j].topk(10, largest=False).indices.tolist())
        assert len(set(cand[j].tolist())) == 20
    with pytest.raises(InputError, match="inner-product index"):
        gradient_candidates(KNNIndex(E), Sh, 20)


def test_for_a_linear_model_the_gradient_prefilter_finds_every_top_point():
    # all parameters are the last layer, so its term is the whole influence: recall 1 at any k
    g = torch.Generator().manual_seed(4)
    X, y = torch.randn(200, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (200,), generator=g)
    model = torch.nn.Linear(6, 3).double().eval()
    obj = Objective(model, "cross_entropy", (X, y), l2=0.1)
    S = make_solver("exact").fit(obj).solve(obj.grads(X[:4], y[:4]))
    up = -scores(obj, S, method="grad")
    cand = gradient_candidates(gradient_index(gradient_embedding(obj)), head_block(obj, S), 20)
    assert recall_at_k(up, cand, ks=(20,), top=10)[20]["mean"] == 1.0
