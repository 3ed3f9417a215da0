"""uses.mislabel: label flipping, detection curves, and self-influence finding flipped labels."""

import numpy as np
import pytest
import torch

from influencekit.errors import InputError
from influencekit.experiments import datasets
from influencekit.experiments import mislabel as ml


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
    r = ml.run((Xtr, ytr), (Xte, yte), l2=1e-3, retrain_at=(0.0, 0.1), fractions=np.linspace(0, 0.3, 31))
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
    kw = dict(l2=1e-2, retrain_at=(0.0,), fractions=np.linspace(0, 0.3, 4))
    fast = ml.run((X[:200], y[:200]), (X[200:], y[200:]), **kw)
    exact = ml.run((X[:200], y[:200]), (X[200:], y[200:]), solver="exact", **kw)
    torch.testing.assert_close(fast.self_influence, exact.self_influence, rtol=1e-8, atol=1e-12)
    assert fast.at(0.1)["self_influence"] > 2 * fast.at(0.1)["random"]


def test_run_net_ranks_a_trained_mlp_by_ekfac_self_influence_and_refits_with_the_same_recipe():
    Xtr, ytr, Xte, yte = datasets.digits(None, dtype=torch.float32)
    Xtr, ytr = Xtr[:600], ytr[:600]
    kw = dict(hidden=(16,), epochs=15, l2=1e-4, lr=1e-2, retrain_at=(0.0, 0.1), fractions=np.linspace(0, 0.3, 31))
    r = ml.run_net((Xtr, ytr), (Xte, yte), validate=True, **kw)
    assert r.p == 64 * 16 + 16 + 16 * 10 + 10 and r.n_flipped == 60
    assert r.self_influence.shape == (600,) and (r.self_influence <= 0).all()  # EK-FAC curvature is PSD + damping
    assert r.order["self_influence"][0] == r.self_influence.argmin()  # most negative first
    assert 0.0 <= r.flips_fitted <= 1.0 and 0.0 < r.val_accuracy <= 1.0
    assert all(len(a) == 2 and a[0] == r.noisy_accuracy for a in r.accuracy.values())
    at = r.at(0.1)
    assert at["self_influence"] > 3 * at["random"] and at["loss"] > 3 * at["random"]
    head = ml.run_net((Xtr, ytr), (Xte, yte), solver="exact", damping=1e-4, params=("head.weight", "head.bias"),
                      **(kw | {"retrain_at": (0.0,)}))
    assert head.p == 16 * 10 + 10 and (head.self_influence <= 0).all()
    assert (head.losses == r.losses).all()  # same recipe and seed: the same noisy fit


def test_mislabel_command_model_mlp_runs_the_network_recipe_on_image_data_only():
    from influencekit.cli import mislabel as cmd

    res = cmd.compute("digits", model="mlp", retrain_at=(0.0,), progress=False)
    r = res["result"]
    assert res["l2"] == cmd.MLP_RECIPE["l2"] and r.model.startswith("MLP 64-32-10")
    assert r.p == 64 * 32 + 32 + 32 * 10 + 10 and r.val_accuracy is not None
    assert cmd.to_json(res)["flips_fitted"] == r.flips_fitted
    with pytest.raises(InputError, match="mlp"):
        cmd.compute("enron", model="mlp")


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
    kw = dict(l2=1e-2, retrain_at=(0.0,), fractions=np.linspace(0, 0.3, 4))
    fast = ml.run((Xtr, ytr), (Xte, yte), **kw)
    exact = ml.run((Xtr, ytr), (Xte, yte), solver="exact", **kw)
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


def test_run_net_trains_a_cnn_on_28_by_28_images_and_refuses_other_sizes(data_dir):
    Xtr, ytr, Xte, yte = datasets.mnist(str(data_dir), flatten=False, dtype=torch.float32)
    Xtr, ytr, Xte, yte = Xtr[:600], ytr[:600], Xte[:200], yte[:200]
    r = ml.run_net((Xtr, ytr), (Xte, yte), arch="cnn", epochs=30, l2=1e-3, retrain_at=(0.0,),
                   fractions=np.linspace(0, 0.3, 31))
    assert r.p == 11_978 and r.model.startswith("CNN") and (r.self_influence <= 0).all()
    assert r.at(0.1)["self_influence"] > 4 * r.at(0.1)["random"]  # EK-FAC on conv layers finds flips
    for shape in ((10, 64), (10, 784)):  # digits, and flattened MNIST
        with pytest.raises(InputError, match="28 x 28"):
            ml.fit_net(torch.zeros(shape), torch.zeros(10, dtype=torch.long), 10, arch="cnn")


def test_mislabel_command_model_cnn_takes_mnist_only():
    from influencekit.cli import mislabel as cmd

    for dataset in ("digits", "enron"):
        with pytest.raises(InputError, match="cnn"):
            cmd.compute(dataset, model="cnn")


def test_a_stored_result_reads_back_equal_and_refuses_other_settings(tmp_path):
    from influencekit.errors import CacheError

    Xtr, ytr, Xte, yte = datasets.digits(None)
    r = ml.run((Xtr[:300], ytr[:300]), (Xte, yte), l2=1e-2, retrain_at=(0.0, 0.1))
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
    from influencekit.cli import mislabel as cmd

    kw = dict(repeats=2, retrain_at=(0.0, 0.1), progress=False, cache=str(tmp_path))
    calls = []
    real = ml.run

    def flaky(*a, seed, **k):  # the second flip seed is "interrupted"
        calls.append(seed)
        if seed == 1 and calls.count(1) == 1:
            raise KeyboardInterrupt
        return real(*a, seed=seed, **k)

    monkeypatch.setattr(ml, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        cmd.compute("digits", **kw)
    again = cmd.compute("digits", **kw)  # seed 0 is read back, only seed 1 runs
    assert calls == [0, 1, 1]
    monkeypatch.setattr(ml, "run", real)
    fresh = cmd.compute("digits", repeats=2, retrain_at=(0.0, 0.1), progress=False)
    assert cmd.to_json(again) == cmd.to_json(fresh)
    assert len(list(tmp_path.glob("*.json"))) == 2
