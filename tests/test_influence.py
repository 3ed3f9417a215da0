"""The influence quantities against their definitions: finite differences of re-optimised
parameters, and leave-one-out retraining."""

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
