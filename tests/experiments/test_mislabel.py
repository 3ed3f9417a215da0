"""experiments.mislabel: label flipping, detection curves, the one skeleton for linear models and
networks, its resumable repeats, and self-influence finding flipped labels."""

import numpy as np
import pytest
import torch

from influencekit.errors import InputError
from influencekit.experiments import datasets
from influencekit.experiments import mislabel as ml
from influencekit.experiments.fit import accuracy, fit_linear, multinomial_self_influence


def _problem(train, test, recipe, seed=0):
    return ml.build(ml.Data(train, test, "test data"), recipe, seed=seed)


def test_flip_labels_flips_exactly_the_fraction_and_never_keeps_the_true_class():
    y = torch.arange(200) % 10
    noisy, idx = ml.flip_labels(y, 0.1, seed=3)
    assert len(idx) == 20
    assert (noisy[idx] != y[idx]).all()
    rest = torch.ones(200, dtype=torch.bool)
    rest[idx] = False
    assert (noisy[rest] == y[rest]).all()
    yb = torch.arange(50) % 2
    nb, ib = ml.flip_labels(yb, 0.2)
    assert (nb[ib] == 1 - yb[ib]).all()


def test_flip_fraction_must_be_a_proper_fraction():
    with pytest.raises(InputError, match="fraction"):
        ml.flip_labels(torch.zeros(10, dtype=torch.long), 1.5)


def test_detection_curve_counts_flipped_points_among_the_first_checked():
    order = torch.tensor([4, 0, 2, 1, 3])
    flipped = torch.tensor([0, 3])
    curve = ml.detection_curve(order, flipped, np.array([0.0, 0.2, 0.4, 0.8, 1.0]))
    np.testing.assert_allclose(curve, [0.0, 0.0, 0.5, 0.5, 1.0])


def test_enron_features_use_words_only_without_stop_words_and_cap_the_vocabulary():
    docs = ["Subject: cheap meds 123 buy now", "Subject: meeting at the office", "Subject: buy cheap cheap meds",
            "Subject: office meeting notes", "Subject: the meds are cheap"]
    Xtr, ytr, Xte, yte, vocab = ml.enron_features(docs, np.array([1, 0, 1, 0, 1]), max_features=3, test_fraction=0.2)
    assert len(vocab) <= 3 and Xtr.shape == (4, len(vocab)) and Xte.shape == (1, len(vocab))
    assert not {"the", "at", "123"} & set(vocab)
    assert Xtr.min() >= 0 and Xtr.dtype == torch.float64


def test_on_digits_self_influence_finds_far_more_flipped_labels_than_random_and_fixing_them_helps():
    Xtr, ytr, Xte, yte = datasets.digits(None)
    r = ml.run(_problem((Xtr, ytr), (Xte, yte), ml.Linear(1e-3)), retrain_at=(0.0, 0.1),
               fractions=np.linspace(0, 0.3, 31))
    at = r.at(0.1)
    assert r.n_flipped == round(0.1 * r.n)
    assert at["self_influence"] > 0.6 and at["self_influence"] > 3 * at["random"]
    assert (r.self_influence <= 1e-12).all()  # -g^T H^-1 g with H positive definite
    # fixing the 10% the ranking points at restores accuracy toward the clean-label model
    assert r.accuracy["self_influence"][1] > r.accuracy["self_influence"][0]
    assert r.accuracy["self_influence"][1] >= r.accuracy["random"][1]


def test_enron_features_default_to_every_word_in_at_least_min_df_training_emails():
    docs = ["Subject: cheap meds buy now", "Subject: meeting office notes", "Subject: buy cheap meds today",
            "Subject: office meeting agenda", "Subject: meds cheap"]
    _, _, _, _, vocab = ml.enron_features(docs, np.array([1, 0, 1, 0, 1]), test_fraction=0.2)
    _, _, _, _, vocab1 = ml.enron_features(docs, np.array([1, 0, 1, 0, 1]), min_df=1, test_fraction=0.2)
    assert {"cheap", "meds"} <= set(vocab) and set(vocab) < set(vocab1)


def test_binary_run_uses_the_closed_form_self_influence_equal_to_the_exact_solver():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(240, 8, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.3 * torch.randn(240, generator=g, dtype=torch.float64) > 0).long()
    kw = dict(retrain_at=(0.0,), fractions=np.linspace(0, 0.3, 4))
    fast = ml.run(_problem((X[:200], y[:200]), (X[200:], y[200:]), ml.Linear(1e-2)), **kw)
    exact = ml.run(_problem((X[:200], y[:200]), (X[200:], y[200:]), ml.Linear(1e-2, solver="exact")), **kw)
    torch.testing.assert_close(fast.self_influence, exact.self_influence, rtol=1e-8, atol=1e-12)
    assert fast.at(0.1)["self_influence"] > 2 * fast.at(0.1)["random"]


def test_a_network_recipe_ranks_by_ekfac_self_influence_and_refits_with_the_same_recipe():
    Xtr, ytr, Xte, yte = datasets.digits(None, dtype=torch.float32)
    Xtr, ytr = Xtr[:600], ytr[:600]
    recipe = dict(hidden=(16,), epochs=15, l2=1e-4, lr=1e-2)
    kw = dict(retrain_at=(0.0, 0.1), fractions=np.linspace(0, 0.3, 31))
    r = ml.run(_problem((Xtr, ytr), (Xte, yte), ml.Net(**recipe)), validate=True, **kw)
    assert r.p == 64 * 16 + 16 + 16 * 10 + 10 and r.n_flipped == 60
    assert r.self_influence.shape == (600,) and (r.self_influence <= 0).all()  # EK-FAC curvature is PSD + damping
    assert r.order["self_influence"][0] == r.self_influence.argmin()  # most negative first
    assert 0.0 <= r.flips_fitted <= 1.0 and 0.0 < r.val_accuracy <= 1.0
    assert all(len(a) == 2 and a[0] == r.noisy_accuracy for a in r.accuracy.values())
    at = r.at(0.1)
    assert at["self_influence"] > 3 * at["random"] and at["loss"] > 3 * at["random"]
    head = ml.run(_problem((Xtr, ytr), (Xte, yte), ml.Net(**recipe, solver="exact", damping=1e-4,
                                                          params=("head.weight", "head.bias"))),
                  **(kw | {"retrain_at": (0.0,)}))
    assert head.p == 16 * 10 + 10 and (head.self_influence <= 0).all()
    assert (head.losses == r.losses).all()  # same recipe and seed: the same noisy fit


def test_the_mlp_problem_runs_the_network_recipe_on_image_data_only():
    r = ml.run(ml.problem("digits", model="mlp"), retrain_at=(0.0,))
    assert r.l2 == ml.MLP_RECIPE["l2"] and r.model.startswith("MLP 64-32-10")
    assert r.description.endswith("MLP 64-32-10 tanh, 30 epochs Adam, l2 = 0.0001, EK-FAC self-influence")
    assert r.p == 64 * 32 + 32 + 32 * 10 + 10 and r.val_accuracy is not None
    assert r.to_json()["flips_fitted"] == r.flips_fitted
    with pytest.raises(InputError, match="mlp"):
        ml.problem("enron", model="mlp")


def test_enron_features_give_raw_word_counts_on_request_and_refuse_unknown_scalings():
    docs = ["Subject: cheap cheap cheap meds", "Subject: office meeting", "Subject: cheap meds meds",
            "Subject: office office meeting", "Subject: meds"]
    Xtr, _, _, _, vocab = ml.enron_features(docs, np.array([1, 0, 1, 0, 1]), min_df=1, counts="raw", test_fraction=0.2)
    Xlog, _, _, _, _ = ml.enron_features(docs, np.array([1, 0, 1, 0, 1]), min_df=1, test_fraction=0.2)
    assert float(Xtr.max()) == 3.0 and set(Xtr.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    torch.testing.assert_close(Xlog, torch.log1p(Xtr))
    with pytest.raises(InputError, match="counts"):
        ml.enron_features(docs, np.array([1, 0, 1, 0, 1]), counts="tfidf")


def test_multiclass_run_uses_the_closed_form_self_influence_equal_to_the_exact_solver():
    Xtr, ytr, Xte, yte = datasets.digits(None)
    Xtr, ytr = Xtr[:300], ytr[:300]
    kw = dict(retrain_at=(0.0,), fractions=np.linspace(0, 0.3, 4))
    fast = ml.run(_problem((Xtr, ytr), (Xte, yte), ml.Linear(1e-2)), **kw)
    exact = ml.run(_problem((Xtr, ytr), (Xte, yte), ml.Linear(1e-2, solver="exact")), **kw)
    torch.testing.assert_close(fast.self_influence, exact.self_influence, rtol=1e-8, atol=1e-12)


def _result(found, acc, clean, fitted):
    fr = np.array([0.0, 0.1])
    return ml.MislabelResult(fractions=fr, found={"self_influence": np.array(found), "loss": np.array([0.0, 0.5])},
                             retrain_at=np.array([0.0, 0.1]), accuracy={"self_influence": np.array(acc),
                             "loss": np.array(acc)}, clean_accuracy=clean, noisy_accuracy=acc[0], n=10, n_flipped=1,
                             p=3, flips_fitted=fitted)


def test_aggregate_averages_the_curves_over_flip_seeds_and_keeps_each_seeds_numbers():
    a = _result([0.0, 0.6], [0.8, 0.9], 0.95, 0.2)
    b = _result([0.0, 0.8], [0.8, 0.7], 0.95, 0.4)
    r = ml.aggregate([a, b], [3, 4])
    np.testing.assert_allclose(r.found["self_influence"], [0.0, 0.7])
    np.testing.assert_allclose(r.found_std["self_influence"], [0.0, np.std([0.6, 0.8], ddof=1)])
    np.testing.assert_allclose(r.accuracy["self_influence"], [0.8, 0.8])
    np.testing.assert_allclose(r.accuracy_std["loss"], [0.0, np.std([0.9, 0.7], ddof=1)])
    assert r.flips_fitted == pytest.approx(0.3) and r.clean_accuracy == pytest.approx(0.95)
    assert [x["seed"] for x in r.repeats] == [3, 4]
    assert r.repeats[1]["found_at_10pct"]["self_influence"] == pytest.approx(0.8)
    js = r.to_json()
    assert js["found_at_10pct_std"]["self_influence"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert len(js["repeats"]) == 2
    with pytest.raises(InputError, match="one result per seed"):
        ml.aggregate([a], [1, 2])


def test_the_cnn_recipe_trains_on_28_by_28_images_and_refuses_other_sizes(data_dir):
    Xtr, ytr, Xte, yte = datasets.mnist(str(data_dir), flatten=False, dtype=torch.float32)
    Xtr, ytr, Xte, yte = Xtr[:600], ytr[:600], Xte[:200], yte[:200]
    r = ml.run(_problem((Xtr, ytr), (Xte, yte), ml.Net(arch="cnn", epochs=30, l2=1e-3)), retrain_at=(0.0,),
               fractions=np.linspace(0, 0.3, 31))
    assert r.p == 11_978 and r.model.startswith("CNN") and (r.self_influence <= 0).all()
    assert r.at(0.1)["self_influence"] > 4 * r.at(0.1)["random"]  # EK-FAC on conv layers finds flips
    for shape in ((10, 64), (10, 784)):  # digits, and flattened MNIST
        with pytest.raises(InputError, match="28 x 28"):
            ml.fit_net(torch.zeros(shape), torch.zeros(10, dtype=torch.long), 10, arch="cnn")


def test_the_cnn_problem_takes_mnist_only():
    for dataset in ("digits", "enron"):
        with pytest.raises(InputError, match="cnn"):
            ml.problem(dataset, model="cnn")


def test_a_stored_result_reads_back_equal_and_refuses_other_settings(tmp_path):
    from influencekit.errors import CacheError

    Xtr, ytr, Xte, yte = datasets.digits(None)
    r = ml.run(_problem((Xtr[:300], ytr[:300]), (Xte, yte), ml.Linear(1e-2)), retrain_at=(0.0, 0.1))
    meta = {"l2": 1e-2, "model": "linear, as the caller names it"}  # may reuse the result's own field names
    ml.save_result(tmp_path / "run", r, meta)
    back = ml.load_result(tmp_path / "run", meta)
    assert list(back.found) == list(r.found) == list(ml.RANKINGS)  # the rankings keep their order
    assert all(np.array_equal(back.found[k], r.found[k]) and torch.equal(back.order[k], r.order[k]) for k in r.found)
    assert back.to_json() == r.to_json() and torch.equal(back.self_influence, r.self_influence)
    assert ml.load_result(tmp_path / "absent", meta) is None
    with pytest.raises(CacheError, match="l2"):
        ml.load_result(tmp_path / "run", meta | {"l2": 1e-3})


def test_an_interrupted_repeated_run_resumes_without_recomputing_finished_seeds(tmp_path, monkeypatch):
    problem = ml.problem("digits")
    kw = dict(repeats=2, retrain_at=(0.0, 0.1), cache=tmp_path)
    calls = []
    real = ml.run_seed

    def flaky(problem, seed, **k):  # the second flip seed is "interrupted"
        calls.append(seed)
        if seed == 1 and calls.count(1) == 1:
            raise KeyboardInterrupt
        return real(problem, seed, **k)

    monkeypatch.setattr(ml, "run_seed", flaky)
    with pytest.raises(KeyboardInterrupt):
        ml.run(problem, **kw)
    again = ml.run(problem, **kw)  # seed 0 is read back, only seed 1 runs
    assert calls == [0, 1, 1]
    monkeypatch.setattr(ml, "run_seed", real)
    fresh = ml.run(problem, repeats=2, retrain_at=(0.0, 0.1))
    assert again.to_json() == fresh.to_json()
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_one_flip_seed_of_a_linear_problem_is_the_closed_form_ranking_of_the_noisy_fit():
    Xtr, ytr, Xte, yte = datasets.digits(None)
    Xtr, ytr = Xtr[:300], ytr[:300]
    problem = _problem((Xtr, ytr), (Xte, yte), ml.Linear(1e-2))
    r = ml.run_seed(problem, 3, retrain_at=(0.0,))
    noisy, flipped = ml.flip_labels(ytr, 0.1, 3)
    assert torch.equal(r.noisy, noisy) and torch.equal(r.flipped, flipped)
    model = fit_linear(Xtr, noisy, 1e-2, 10)
    torch.testing.assert_close(r.self_influence, multinomial_self_influence(model, Xtr, noisy, 1e-2))
    assert torch.equal(r.order["self_influence"], r.self_influence.abs().argsort(descending=True))
    loss = torch.nn.functional.cross_entropy(model(Xtr), noisy, reduction="none")
    torch.testing.assert_close(r.losses, loss.detach())
    assert r.clean_accuracy == accuracy(problem.model, Xte, yte)  # the problem's fit is on the clean labels


def test_repeats_report_means_with_their_spread_over_flip_seeds():
    from influencekit.experiments import report

    r = ml.run(ml.problem("digits"), repeats=2, retrain_at=(0.0, 0.1))
    assert [x["seed"] for x in r.repeats] == [0, 1]
    found = [x["found_at_10pct"]["self_influence"] for x in r.repeats]
    assert r.at(0.1)["self_influence"] == pytest.approx(np.mean(found))
    page = report.Page("t")
    r.report(page)
    html = page.render()
    assert "means over 2 flip seeds" in html and "s.d. of found" in html
    assert html.count("data:image/png") == 1 + 15  # the figure, and a thumbnail per point to check first
    with pytest.raises(InputError, match="repeats"):
        ml.run(ml.problem("digits"), repeats=0)


@pytest.mark.parametrize("model,classes,expected", [("linear", None, 2), ("linear", "all", 10), ("mlp", None, 10),
                                                     ("mlp", "1v7", 2), ("cnn", None, 10)])
def test_mnist_takes_1_vs_7_or_all_ten_classes(data_dir, model, classes, expected):
    data = ml.load("mnist", str(data_dir), 0, n_train=400, model=model, classes=classes)
    Xtr, ytr = data.train
    assert Xtr.shape == ((400, 1, 28, 28) if model == "cnn" else (400, 784)) and int(ytr.max()) + 1 == expected
    assert data.classes == ("all" if expected == 10 else "1v7")


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_network_problems_default_to_the_subset_their_recipes_were_chosen_on(data_dir, model):
    assert len(ml.load("mnist", str(data_dir), 0, model=model).train[1]) == ml.NET_N_TRAIN
    assert len(ml.load("mnist", str(data_dir), 0, model=model, n_train=0).train[1]) == 60_000
