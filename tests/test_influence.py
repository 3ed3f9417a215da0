"""The influence quantities against their definitions: finite differences of re-optimised
parameters, and leave-one-out retraining."""

import importlib.util
import json
import re
import sys
import warnings

import pytest
import torch
from scipy.stats import pearsonr

import influencekit as ik
from helpers import logistic_digits, worst_test_point


def test_up_params_is_the_derivative_of_reoptimised_parameters():
    obj, model, _ = logistic_digits()
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=64)
    i, eps = 3, 1e-5
    # theta_hat_{eps, z_i} = argmin R + eps L(z_i): weights w_i = 1 + n eps
    w_plus, w_minus = torch.ones(obj.n, dtype=torch.float64), torch.ones(obj.n, dtype=torch.float64)
    w_plus[i] += obj.n * eps
    w_minus[i] -= obj.n * eps
    th_plus = ik.minimize(obj, w_plus, newton_steps=2)
    th_minus = ik.minimize(obj, w_minus, newton_steps=2)
    fd = (th_plus - th_minus) / (2 * eps)
    analytic = inf.up_params([i])[0]
    assert ((analytic - fd).norm() / fd.norm()).item() < 1e-3


def test_up_loss_is_test_gradient_dot_up_params():
    obj, model, test = logistic_digits()
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=64)
    t = worst_test_point(obj, test)
    g_test = inf.test_gradients(t)[0]
    expected = inf.up_params(range(10)) @ g_test
    torch.testing.assert_close(inf.up_loss(t)[0, :10], expected)
    torch.testing.assert_close(inf.loo(t), -inf.up_loss(t) / obj.n)


def test_jvp_and_per_example_gradient_scoring_agree():
    obj, model, test = logistic_digits()
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=64)
    t = worst_test_point(obj, test)
    torch.testing.assert_close(inf.up_loss(t, method="jvp"), inf.up_loss(t, method="grad"))


def test_self_influence_is_the_diagonal_of_train_on_train_influence():
    obj, model, _ = logistic_digits(n_train=60)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=16)
    full = inf.up_loss(obj.train)
    torch.testing.assert_close(inf.self_influence(), full.diagonal())
    assert (inf.self_influence() <= 0).all()  # H positive definite


def test_predicted_loo_change_matches_retraining_on_the_most_influential_points():
    obj, model, test = logistic_digits()
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=64)
    t = worst_test_point(obj, test)
    pred = inf.loo(t)[0]
    top = pred.abs().argsort(descending=True)[:20]
    actual = ik.loo_retrain(obj, top.tolist(), t)[0]
    r = pearsonr(pred[top].numpy(), actual.numpy()).statistic
    assert r > 0.99
    # the sign convention: removing a point with positive predicted change raises the loss
    assert (torch.sign(pred[top]) == torch.sign(actual)).float().mean() > 0.9


def test_a_last_layer_scope_gives_the_influence_of_that_block():
    obj, model, test = logistic_digits(n_train=80)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", params=["linear.weight"])
    assert inf.objective.p == 64
    assert torch.isfinite(inf.up_loss(worst_test_point(obj, test))).all()


# ---- the face: everything a command or an experiment needs, without reaching inside ---------------

def _mlp(n: int = 60, m: int = 3):
    """A small float64 MLP with ``features`` and a last Linear ``head`` (exact solver, damping 1):
    the face on a network. Returns (Influence, test pair)."""
    from influencekit.experiments.models import MLP

    g = torch.Generator().manual_seed(0)
    X = torch.randn(n + m, 5, generator=g, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] > 0).long()
    torch.manual_seed(0)
    model = MLP(5, (4,), 2).double().eval()
    with warnings.catch_warnings():  # the untrained model is not stationary; irrelevant here
        warnings.simplefilter("ignore")
        inf = ik.Influence(model, "cross_entropy", (X[:n], y[:n]), l2=0.1, solver="exact", damping=1.0,
                           batch_size=16).fit()
    return inf, (X[n:], y[n:])


def test_top_k_lists_the_largest_and_most_negative_up_loss_of_each_test_point():
    obj, model, test = logistic_digits(n_train=80)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact")
    t = (test[0][:4], test[1][:4])
    up = inf.up_loss(t)
    top = inf.top_k(t, k=7)
    order = up.argsort(1, descending=True)
    assert torch.equal(top.harmful_index, order[:, :7]) and torch.equal(top.helpful_index, order.flip(1)[:, :7])
    torch.testing.assert_close(top.harmful, up.gather(1, order[:, :7]))
    torch.testing.assert_close(top.helpful, up.gather(1, order.flip(1)[:, :7]))
    assert top.scored == obj.n and top.candidates is None


@pytest.mark.parametrize("prefilter", ["knn", "grad"])
def test_a_prefilter_offered_every_point_gives_the_full_answer(prefilter, tmp_path):
    pytest.importorskip("faiss")
    inf, test = _mlp()
    full = inf.top_k(test, k=5)
    path = tmp_path / "index"
    for i in range(2):  # built and saved, then reused
        pre = inf.top_k(test, k=5, prefilter=prefilter, candidates=inf.n, index_path=path)
        assert pre.index_rebuilt is (i == 0)
        assert pre.scored == inf.n and pre.candidates.shape == (3, inf.n)
        for name in ("harmful_index", "helpful_index"):
            assert torch.equal(getattr(pre, name), getattr(full, name))
        for name in ("harmful", "helpful"):
            torch.testing.assert_close(getattr(pre, name), getattr(full, name))
    assert path.with_suffix(".faiss").exists()


def test_the_knn_prefilter_scores_the_candidates_exactly_and_takes_features_as_given():
    pytest.importorskip("faiss")
    inf, test = _mlp()
    up = inf.up_loss(test)
    X, _ = inf.objective.train.x, inf.objective.train.y
    features = lambda x: x[:, :2]  # noqa: E731  (nearest in the first two inputs)
    pre = inf.top_k(test, k=3, prefilter="knn", candidates=10, features=features)
    # the candidates are the 10 nearest training inputs in the first two coordinates
    d = torch.cdist(test[0][:, :2], X[:, :2])
    assert torch.equal(pre.candidates.sort(1).values, d.topk(10, largest=False).indices.sort(1).values)
    assert pre.scored == int(torch.unique(pre.candidates).numel())
    torch.testing.assert_close(pre.harmful, up.gather(1, pre.harmful_index))  # exact I_up,loss
    as_tensors = inf.top_k(test, k=3, prefilter="knn", candidates=10, features=(X[:, :2], test[0][:, :2]))
    assert torch.equal(as_tensors.candidates, pre.candidates)


def test_top_k_refuses_what_it_cannot_do_and_says_how_to_fix_it(monkeypatch):
    obj, model, test = logistic_digits(n_train=40)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact")
    t = (test[0][:2], test[1][:2])
    for k in (0, 41, 2.5):
        with pytest.raises(ik.InputError, match="k must"):
            inf.top_k(t, k=k)
    with pytest.raises(ik.InputError, match="prefilter must be one of"):
        inf.top_k(t, prefilter="random")
    with pytest.raises(ik.InputError, match="candidates must be >= k"):
        inf.top_k(t, k=10, prefilter="knn", candidates=5)
    with pytest.raises(ik.InputError, match="and >= 2"):
        inf.top_k(t, k=1, prefilter="grad", candidates=1)
    if importlib.util.find_spec("faiss") is not None:
        with pytest.raises(ik.InputError, match="has no `features`.*features="):
            inf.top_k(t, prefilter="knn")  # a logistic regression has no penultimate layer
        with pytest.raises(ik.InputError, match="index_kind"):
            inf.top_k(t, prefilter="grad", index_kind="tree")
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed: `import faiss` fails
    for prefilter in ("knn", "grad"):
        with pytest.raises(ik.InputError, match=re.escape("pip install influencekit[fastif]")):
            inf.top_k(t, prefilter=prefilter)


def test_run_is_resumable_and_equals_up_loss(tmp_path):
    inf, test = _mlp(n=50)
    first = inf.run(test, tmp_path, chunk_size=8)  # 7 chunk files
    torch.testing.assert_close(first, inf.up_loss(test, method="grad"), rtol=1e-10, atol=1e-12)
    for suffix in (".json", ".safetensors"):  # as if killed before chunk 3 was stored
        (tmp_path / f"chunk_00003{suffix}").unlink()
    kept = (tmp_path / "chunk_00004.safetensors").stat().st_mtime_ns
    assert torch.equal(inf.run(test, tmp_path, chunk_size=8), first)
    assert (tmp_path / "chunk_00004.safetensors").stat().st_mtime_ns == kept  # only chunk 3 was recomputed
    with pytest.raises(ik.CacheError, match="chunk_size"):
        inf.run(test, tmp_path, chunk_size=16)


def test_settings_are_json_and_name_what_results_depend_on():
    inf, _ = _mlp()
    s = json.loads(json.dumps(inf.settings()))
    assert s["solver"] == {"solver": "exact", "damping": 1.0}
    assert (s["n"], s["p"], s["l2"], s["dtype"]) == (inf.n, inf.p, 0.1, "torch.float64")
    assert s["params"] == inf.objective.names and s["test_loss"] is None
    assert inf.p == 5 * 4 + 4 + 4 * 2 + 2


def test_loo_retrain_takes_the_influence_and_measures_its_test_loss():
    from influencekit.losses import logistic

    obj, model, test = logistic_digits(n_train=60)
    double = lambda out, y: 2 * logistic(out, y)  # noqa: E731  (a test loss that is not the training loss)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", test_loss=double)
    t = worst_test_point(obj, test)
    actual = ik.loo_retrain(inf, [3, 14], t)
    torch.testing.assert_close(actual, ik.loo_retrain(inf.objective, [3, 14], t, test_loss=double))
    torch.testing.assert_close(actual, 2 * ik.loo_retrain(obj, [3, 14], t))
    torch.testing.assert_close(inf.losses(t), 2 * logistic(model(t[0]), t[1]))
    with pytest.raises(ik.InputError, match="takes an Influence"):
        ik.loo_retrain(model, [3], t)


def test_a_solver_instance_keeps_its_damping_and_a_conflicting_one_is_refused():
    obj, model, _ = logistic_digits(n_train=40)
    cg = ik.make_solver("cg", damping=0.5)
    assert ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver=cg).solver.damping == 0.5
    assert ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver=cg, damping=0.5).solver is cg
    with pytest.raises(ik.InputError, match=r"damping=0.1.*make_solver\('cg', damping=0.1\)"):
        ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver=cg, damping=0.1)
    with pytest.raises(ik.InputError, match="tol.*constructor"):
        ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver=cg, tol=1e-3)


def test_gradients_scores_and_curvature_through_the_face():
    obj, model, test = logistic_digits(n_train=80)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact")
    rows = [5, 0, 79]
    G = inf.train_gradients(rows)
    torch.testing.assert_close(G, inf.test_gradients(obj.train.take(rows)))
    S = inf.s_test((test[0][:2], test[1][:2]))
    full = inf.scores(S)  # [2, n]
    torch.testing.assert_close(full, S @ inf.train_gradients(range(inf.n)).T)
    torch.testing.assert_close(inf.scores(S, index=rows), full[:, rows])
    torch.testing.assert_close(inf.up_params(rows), -torch.linalg.solve(obj.hessian(), G.T).T)
    H = obj.hessian()
    eig = torch.linalg.eigvalsh(H)
    sp = inf.spectrum(steps=obj.p)
    assert abs(sp.max_eigenvalue - eig[-1].item()) < 1e-8 * eig[-1].item()
    assert inf.suggest_damping(steps=obj.p) == 0.0  # logistic regression with l2 > 0: positive definite
    with pytest.raises(ik.InputError, match=r"\[k, p\] with p = 65"):
        inf.scores(S[:, :3])
    with pytest.raises(ik.InputError, match=r"\[0, n = 80\)"):
        inf.train_gradients([80])


def test_a_subclass_builds_its_own_objective_once():
    obj, model, _ = logistic_digits(n_train=40)
    built = []

    class Counting(ik.Influence):
        def make_objective(self, *args, **kwargs):
            built.append(kwargs["batch_size"])
            return super().make_objective(*args, **kwargs)

    inf = Counting(model, "logistic", obj.train, l2=obj.l2, batch_size=7)
    assert built == [7] and inf.objective.batch_size == 7


class _Attention(torch.nn.Module):
    """A model whose attention layer returns a tuple and uses its out_proj weight without calling it:
    the layer capture cannot replay it, so fast scoring must fall back, not fail or guess."""

    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        h, _ = self.attn(x, x, x, need_weights=False)
        return self.head(h.mean(1))


def test_default_scoring_of_many_vectors_falls_back_to_gradients_where_layers_cannot_be_captured():
    torch.manual_seed(0)
    model = _Attention().double().eval()
    X, y = torch.randn(12, 5, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    inf = ik.Influence(model, "cross_entropy", (X, y), l2=0.1, damping=0.1)
    S = torch.randn(5, inf.p, dtype=torch.float64)  # > 2 vectors: "auto" tries the layer capture first
    torch.testing.assert_close(inf.scores(S), S @ inf.train_gradients(range(12)).T, rtol=1e-10, atol=1e-12)
    with pytest.raises(ik.UnsupportedLayerError):
        inf.scores(S, method="layers")  # asked for by name: the error says why


class _SharedHead(torch.nn.Module):
    """Uses a sub-module's weights without calling the sub-module (as attention's out_proj is used)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)

    def forward(self, x):
        return torch.nn.functional.linear(torch.tanh(self.a(x)), self.b.weight, self.b.bias)


def test_default_scoring_falls_back_where_a_layer_is_used_without_being_called():
    torch.manual_seed(0)
    X, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,))
    inf = ik.Influence(_SharedHead().double().eval(), "cross_entropy", (X, y), l2=0.1, damping=0.1)
    S = torch.randn(5, inf.p, dtype=torch.float64)
    torch.testing.assert_close(inf.scores(S), S @ inf.train_gradients(range(20)).T, rtol=1e-10, atol=1e-12)


def test_training_rows_must_be_integers_not_a_mask():
    inf, _ = _mlp()
    with pytest.raises(ik.InputError, match="boolean mask"):
        inf.up_params(torch.zeros(inf.n, dtype=torch.bool))


def test_the_face_over_an_objective_built_elsewhere_answers_as_the_one_built_from_the_model():
    inf, test = _mlp()
    other = ik.Influence.from_objective(inf.objective, solver="exact", damping=1.0)
    torch.testing.assert_close(other.up_loss(test), inf.up_loss(test), rtol=1e-10, atol=1e-12)
    with pytest.raises(ik.InputError, match="solver instance"):
        ik.Influence.from_objective(inf.objective, solver=ik.make_solver("cg"), tol=1e-3)
