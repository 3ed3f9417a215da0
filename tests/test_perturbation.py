"""I_pert,loss against its definitions: the gradient in x (or y) of the exact I_up,loss, and the
actual change of the test loss after retraining on the perturbed training set."""

import pytest
import torch

import influencekit as ik
from helpers import logistic_digits, worst_test_point
from influencekit.experiments import datasets
from influencekit.experiments.models import LogisticRegression
from influencekit.influence import scores
from influencekit.perturbation import iter_pert_loss, pert_loss, pert_loss_all, predicted_change


def _exact_up_loss(obj, s, X, Y):
    """I_up,loss(z, z_test) = -s_test^T grad L(z) for each row of (X, Y): [B]."""
    return -scores(obj, s, (X, Y), method="grad")[0]


def test_pert_loss_is_the_input_gradient_of_the_exact_up_loss():
    obj, model, test = logistic_digits()
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=64)
    s = inf.s_test(worst_test_point(obj, test))[0]
    i, h = 5, 1e-5
    x, y = obj.train.take([i])
    analytic = pert_loss(obj, s, x, y)[0]  # [64]
    # central differences, one coordinate e_j of x_i at a time, all 64 in one batch
    E = torch.eye(64, dtype=torch.float64) * h
    Y = y.repeat(64)
    fd = (_exact_up_loss(obj, s, x + E, Y) - _exact_up_loss(obj, s, x - E, Y)) / (2 * h)
    assert ((analytic - fd).norm() / fd.norm()).item() < 1e-3
    assert analytic.abs().max() > 1e-3  # a real signal, not two zeros agreeing


def test_moving_a_training_input_changes_the_retrained_test_loss_by_one_over_n_pert_dot_delta():
    obj, model, test = logistic_digits()
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=64)
    t = worst_test_point(obj, test)
    s = inf.s_test(t)[0]
    X, Y = obj.train.x, obj.train.y
    i = int(scores(obj, s)[0].abs().argmax())  # an influential point, so the change is well above round-off
    g = pert_loss(obj, s, X[i:i + 1], Y[i:i + 1])[0]
    delta = 1e-3 * g / g.norm()

    def retrained_test_loss(sign):
        Xp = X.clone()
        Xp[i] += sign * delta
        o = ik.Objective(model, "logistic", (Xp, Y), l2=obj.l2, batch_size=64)
        th = ik.minimize(o, newton_steps=2)
        return o.losses(th, *o.cast(*t))[0]

    actual = (retrained_test_loss(+1) - retrained_test_loss(-1)) / 2  # central: second order cancels
    predicted = predicted_change(g.unsqueeze(0), delta.unsqueeze(0), obj.n)
    assert predicted > 0  # a step along +I_pert,loss raises the test loss
    assert abs((actual - predicted) / predicted).item() < 1e-2


def _ridge_regression():
    Xtr, _, _, _ = datasets.digits((1, 7))
    Xtr = Xtr[:120]
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, generator=g, dtype=torch.float64)
    y = Xtr @ w / 8 + 0.1 * torch.randn(120, generator=g, dtype=torch.float64)
    model = LogisticRegression(64).double()  # one linear output: a linear regression with mse
    obj = ik.Objective(model, "mse", (Xtr, y), l2=1e-2, batch_size=64)
    model = obj.to_model(ik.minimize(obj, newton_steps=2)).eval()
    return ik.Objective(model, "mse", (Xtr, y), l2=1e-2, batch_size=64), model


def test_label_perturbation_is_the_label_gradient_of_the_exact_up_loss_and_matches_retraining():
    obj, model = _ridge_regression()
    inf = ik.Influence(model, "mse", obj.train, l2=obj.l2, solver="exact")
    X, Y = obj.train.x, obj.train.y
    t = (X[:1] + 0.3, Y[:1] + 1.0)
    s = inf.s_test(t)[0]
    G = pert_loss_all(obj, s, wrt="y")  # [n]
    i, h = 7, 1e-5
    fd = (_exact_up_loss(obj, s, X[i:i + 1], Y[i:i + 1] + h) - _exact_up_loss(obj, s, X[i:i + 1], Y[i:i + 1] - h))
    fd = fd[0] / (2 * h)
    assert abs((G[i] - fd) / fd).item() < 1e-3
    # retraining: for a linear model with mse the test loss is quadratic in y_i, so the central
    # difference equals the first-order prediction up to retraining round-off
    d = 1e-2

    def retrained(sign):
        Yp = Y.clone()
        Yp[i] += sign * d
        o = ik.Objective(model, "mse", (X, Yp), l2=obj.l2)
        return o.losses(ik.minimize(o, newton_steps=2), *o.cast(*t))[0]

    actual = (retrained(+1) - retrained(-1)) / 2
    assert abs((actual - G[i] * d / obj.n) / actual).item() < 1e-3


def test_streaming_and_batched_test_vectors_agree_with_single_calls():
    obj, model, test = logistic_digits(n_train=100)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=64)
    S = inf.s_test((test[0][:2], test[1][:2]))  # [2, p]
    both = pert_loss_all(obj, S, batch_size=30)  # [2, n, 64], streamed in 4 batches
    assert both.shape == (2, 100, 64)
    for k in range(2):
        torch.testing.assert_close(both[k], pert_loss(obj, S[k], obj.train.x, obj.train.y))
    starts = [start for start, _ in iter_pert_loss(obj, S[0], batch_size=30)]
    assert starts == [0, 30, 60, 90]


def test_bad_requests_say_what_to_change():
    obj, _, _ = logistic_digits(n_train=50)
    x, y = obj.train.take([0, 1])
    with pytest.raises(ik.InputError, match="floating labels"):
        pert_loss(obj, obj.theta, x, y.long(), wrt="y")
    with pytest.raises(ik.InputError, match="wrt"):
        pert_loss(obj, obj.theta, x, y, wrt="theta")
    with pytest.raises(ik.InputError, match=r"\[p\] or \[k, p\]"):
        pert_loss(obj, obj.theta[:3], x, y)


def test_the_face_gives_pert_loss_of_its_s_test_for_chosen_training_rows():
    obj, model, test = logistic_digits(n_train=100)
    inf = ik.Influence(model, "logistic", obj.train, l2=obj.l2, solver="exact", batch_size=30)
    t = (test[0][:3], test[1][:3])
    every = pert_loss_all(obj, inf.s_test(t))  # [3, n, 64]
    torch.testing.assert_close(inf.pert_loss(t), every)
    rows = [97, 4, 4, 31]  # any order, repeats allowed
    torch.testing.assert_close(inf.pert_loss(t, rows), every[:, rows])
    with pytest.raises(ik.InputError, match=r"\[0, n = 100\)"):
        inf.pert_loss(t, [100])
    with pytest.raises(ik.InputError, match="floating labels"):
        inf.pert_loss(t, [0], wrt="y")
