"""experiments.explain: helpful/harmful points with the right signs, neighbours, the RBF vs learned-feature
contrast, and the use run on its problem."""

import numpy as np
import pytest
import torch

from influencekit import Influence, loo_retrain
from influencekit.errors import InputError
from influencekit.experiments import datasets
from influencekit.experiments import explain as ex
from influencekit.experiments.fit import fit_linear


@pytest.fixture(scope="module")
def logreg():
    Xtr, ytr, Xte, yte = datasets.digits((1, 7))
    Xtr, ytr = Xtr[:120], ytr[:120]
    model = fit_linear(Xtr, ytr, 1e-2, classes=2)
    return Influence(model, "logistic", (Xtr, ytr), l2=1e-2, solver="exact"), (Xtr, ytr), (Xte, yte)


def test_top_k_overlap_counts_shared_indices_of_largest_influence_and_smallest_distance():
    mag = torch.tensor([5.0, 4.0, 0.1, 0.2, 3.0])
    dist = torch.tensor([0.1, 9.0, 0.2, 8.0, 7.0])
    # top-2 |influence| = {0, 1}; 2 nearest = {0, 2}
    assert ex.top_k_overlap(mag, dist, 2) == 0.5


def test_scores_equal_the_explicit_formula_and_helpful_harmful_are_the_extremes(logreg):
    inf, (Xtr, ytr), (Xte, yte) = logreg
    e = ex.explain(inf, Xtr, Xte[:1], yte[:1], k=3)
    H = inf.objective.hessian()
    g_test = inf.test_gradients((Xte[:1], yte[:1]))[0]
    G = inf.train_gradients(range(inf.n))
    expected = -G @ torch.linalg.solve(H, g_test)  # I_up,loss = -g_test^T H^-1 g_i
    torch.testing.assert_close(e.up_loss, expected, rtol=1e-8, atol=1e-10)
    assert e.helpful == expected.argsort()[:3].tolist()
    assert e.harmful == expected.argsort(descending=True)[:3].tolist()
    torch.testing.assert_close(e.input_distance, (Xtr - Xte[0]).norm(dim=1))


def test_removing_the_most_helpful_point_raises_the_test_loss_and_the_most_harmful_lowers_it(logreg):
    inf, (Xtr, _), (Xte, yte) = logreg
    j = int(inf.losses((Xte, yte)).argmax())
    e = ex.explain(inf, Xtr, Xte[j:j + 1], yte[j:j + 1], k=1)
    actual = loo_retrain(inf, [e.helpful[0], e.harmful[0]], (Xte[j:j + 1], yte[j:j + 1]))[0]
    predicted = -e.up_loss[[e.helpful[0], e.harmful[0]]] / inf.n
    assert actual[0] > 0 > actual[1]
    # first order in 1/n: with n = 120 the single most influential removal is matched to within a third
    torch.testing.assert_close(actual, predicted, rtol=0.4, atol=0)


def test_explain_takes_exactly_one_test_point(logreg):
    inf, (Xtr, _), (Xte, yte) = logreg
    with pytest.raises(InputError, match="one test point"):
        ex.explain(inf, Xtr, Xte[:2], yte[:2])
    with pytest.raises(InputError, match="train_x"):
        ex.explain(inf, Xtr[:-1], Xte[:1], yte[:1])


def test_rbf_features_equal_scikit_learns_nystroem_transform():
    from sklearn.kernel_approximation import Nystroem

    X = torch.rand(40, 5, dtype=torch.float64)
    ny = Nystroem(gamma=0.7, n_components=10, random_state=0).fit(X.numpy())
    model = ex.RBFLogistic(ny, 10)
    np.testing.assert_allclose(model.features(X).numpy(), ny.transform(X.numpy()), rtol=1e-10, atol=1e-12)


def test_rbf_model_influence_follows_distance_more_than_the_mlp():
    Xtr, ytr, Xte, yte = datasets.digits((1, 7))
    r = ex.influence_vs_distance((Xtr, ytr), (Xte, yte), seed=0)
    assert r["rbf"]["accuracy"] > 0.95 and r["mlp"]["accuracy"] > 0.95
    assert r["rbf"]["spearman"] < -0.3  # near points carry the influence
    assert r["rbf"]["spearman"] < r["mlp"]["spearman"]


def test_run_explains_the_highest_loss_test_points_of_its_problem_and_reports_them():
    from influencekit.experiments import report

    problem = ex.problem("digits", "logreg")
    r = ex.run(problem, k=3, distance=False)
    losses = problem.test_losses()
    order = losses.argsort(descending=True).tolist()
    assert [e.test_index for e in r.explanations] == order[:2] + [order[len(order) // 2]]
    first = r.explanations[0]
    assert first.loss == pytest.approx(float(losses[order[0]]), rel=1e-12)
    u = problem.influence().up_loss(problem.test_at([order[0]]))[0]
    torch.testing.assert_close(first.explanation.up_loss, u)
    js = r.to_json()
    assert "positive = harmful" in js["convention"] and "influence_vs_distance" not in js
    assert [h["up_loss"] < 0 for h in js["explanations"][0]["helpful"]] == [True] * 3
    page = report.Page("t")
    r.report(page)
    assert page.render().count("data:image/png") == 3 * (1 + 6)  # per test point: itself, 3 helpful, 3 harmful
    with pytest.raises(InputError, match="out of range"):
        ex.run(problem, test_index=[10_000], distance=False)
