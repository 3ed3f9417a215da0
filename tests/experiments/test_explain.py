"""uses.explain: helpful/harmful points with the right signs, neighbours, and the RBF vs learned-feature contrast."""

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
    return Influence(model, "logistic", (Xtr, ytr), l2=1e-2, solver="exact"), (Xte, yte)


def test_top_k_overlap_counts_shared_indices_of_largest_influence_and_smallest_distance():
    mag = torch.tensor([5.0, 4.0, 0.1, 0.2, 3.0])
    dist = torch.tensor([0.1, 9.0, 0.2, 8.0, 7.0])
    # top-2 |influence| = {0, 1}; 2 nearest = {0, 2}
    assert ex.top_k_overlap(mag, dist, 2) == 0.5


def test_scores_equal_the_explicit_formula_and_helpful_harmful_are_the_extremes(logreg):
    inf, (Xte, yte) = logreg
    obj = inf.objective
    e = ex.explain(inf, Xte[:1], yte[:1], k=3)
    H = obj.hessian()
    g_test = obj.grads(Xte[:1], yte[:1])[0]
    G = obj.grads(*obj.train.take(slice(0, obj.n)))
    expected = -G @ torch.linalg.solve(H, g_test)  # I_up,loss = -g_test^T H^-1 g_i
    torch.testing.assert_close(e.up_loss, expected, rtol=1e-8, atol=1e-10)
    assert e.helpful == expected.argsort()[:3].tolist()
    assert e.harmful == expected.argsort(descending=True)[:3].tolist()
    torch.testing.assert_close(e.input_distance, (obj.train.x - Xte[0]).norm(dim=1))


def test_removing_the_most_helpful_point_raises_the_test_loss_and_the_most_harmful_lowers_it(logreg):
    inf, (Xte, yte) = logreg
    j = int(inf.objective.losses(inf.objective.theta, Xte, yte).argmax())
    e = ex.explain(inf, Xte[j:j + 1], yte[j:j + 1], k=1)
    actual = loo_retrain(inf.objective, [e.helpful[0], e.harmful[0]], (Xte[j:j + 1], yte[j:j + 1]))[0]
    predicted = -e.up_loss[[e.helpful[0], e.harmful[0]]] / inf.n
    assert actual[0] > 0 > actual[1]
    # first order in 1/n: with n = 120 the single most influential removal is matched to within a third
    torch.testing.assert_close(actual, predicted, rtol=0.4, atol=0)


def test_explain_takes_exactly_one_test_point(logreg):
    inf, (Xte, yte) = logreg
    with pytest.raises(InputError, match="one test point"):
        ex.explain(inf, Xte[:2], yte[:2])


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
