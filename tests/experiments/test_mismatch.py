"""experiments.mismatch: the induced mismatch, the perturbation influence it relies on, and the children
found by influence."""

import numpy as np
import torch

from influencekit import Influence
from influencekit.experiments import datasets
from influencekit.experiments import mismatch as mm
from influencekit.experiments.fit import fit_linear


def test_induce_keeps_exactly_the_requested_children_in_training_and_all_in_test():
    rng = np.random.default_rng(0)
    is_child = rng.random(400) < 0.1
    y = torch.as_tensor(rng.integers(0, 2, 400))
    tr, te, kept = mm.induce(y, is_child, keep=4, keep_readmitted=3, seed=1)
    assert len(set(tr) & set(te)) == 0
    assert is_child[tr].sum() == 4 and sorted(kept.tolist()) == np.flatnonzero(is_child[tr]).tolist()
    assert y[tr[kept]].sum() == 3
    # the test split is untouched (20%, its children included); only training children are dropped
    assert len(te) == 80 and len(tr) == 320 - (is_child[np.setdiff1d(np.arange(400), te)].sum() - 4)


def test_the_perturbation_influence_it_uses_is_minus_the_input_derivative_of_the_score():
    torch.manual_seed(0)
    X = torch.randn(60, 4, dtype=torch.float64)
    y = (X[:, 0] + 0.3 * torch.randn(60, dtype=torch.float64) > 0).long()
    inf = Influence(fit_linear(X, y, 1e-2, classes=2), "logistic", (X, y), l2=1e-2, solver="exact")
    s = inf.s_test((X[:1], y[:1]))
    P = inf.pert_loss((X[:1], y[:1]), [0, 1, 2])[0]
    h = 1e-6

    def score(x, yb):  # s_test^T grad_theta L((x, y))
        other = Influence(inf.objective.model, "logistic", (x[None], yb), l2=1e-2, solver="exact")
        return (other.train_gradients([0]) @ s[0]).item()

    for b in range(3):
        for f in range(4):
            e = torch.zeros(4, dtype=torch.float64)
            e[f] = h
            fd = -(score(X[b] + e, y[b:b + 1]) - score(X[b] - e, y[b:b + 1])) / (2 * h)
            assert abs(P[b, f].item() - fd) < 1e-6 * max(1.0, abs(fd))


def test_features_one_hot_groups_sum_to_one_and_numerics_are_standardised(data_dir):
    df = datasets.diabetes(data_dir)
    X, y, names, is_child = mm.features(df, n=3000)
    age = [i for i, c in enumerate(names) if c.startswith("age=")]
    torch.testing.assert_close(X[:, age].sum(1), torch.ones(3000, dtype=torch.float64))
    col = names.index("time_in_hospital")
    assert abs(X[:, col].mean()) < 1e-9 and abs(X[:, col].std() - 1) < 1e-9
    assert (X[:, names.index(mm.CHILD)] == torch.as_tensor(is_child, dtype=torch.float64)).all()


def test_the_kept_children_are_the_most_influential_points_for_the_wrong_test_child(data_dir):
    problem = mm.problem(datasets.diabetes(data_dir), seed=0)
    r = mm.run(problem)
    assert r.test_label != int(r.test_probability > 0.5)  # the explained child is misclassified
    assert r.children_in_top10 == 4
    assert r.top_present_features[0][0] == mm.CHILD
    assert r.kept_children == problem.extra["kept"].tolist() and r.n == len(problem.train[1])
    js = r.to_json()
    assert js["top_present_features"][0]["feature"] == mm.CHILD and "positive = harmful" in js["convention"]
