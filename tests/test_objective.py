"""Objective: per-example gradients, HVPs and the Hessian equal autograd's exact values."""

import pytest
import torch
from torch.autograd.functional import hessian as autograd_hessian

import influencekit as ik
from influencekit.experiments.models import MLP


def _mlp_problem():
    torch.manual_seed(0)
    X, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    model = MLP(5, (4,), classes=3).double().eval()
    return ik.Objective(model, "cross_entropy", (X, y), l2=0.1, batch_size=7), X, y


def _reference_risk(obj, X, y):
    """R(theta) written with plain autograd ops: an independent reference."""
    def risk(theta):
        out = obj.outputs(theta, X)
        return torch.nn.functional.cross_entropy(out, y) + 0.5 * obj.l2 * theta.dot(theta)
    return risk


def test_per_example_gradients_equal_autograd_one_at_a_time():
    obj, X, y = _mlp_problem()
    G = obj.grads(X, y)
    for i in [0, 17, 39]:
        theta = obj.theta.clone().requires_grad_(True)
        li = torch.nn.functional.cross_entropy(obj.outputs(theta, X[i:i + 1]), y[i:i + 1])
        (g,) = torch.autograd.grad(li, theta)
        torch.testing.assert_close(G[i], g, rtol=1e-12, atol=1e-12)


def test_hvp_equals_explicit_hessian_product_and_hessian_is_exact():
    obj, X, y = _mlp_problem()
    H_ref = autograd_hessian(_reference_risk(obj, X, y), obj.theta)
    V = torch.randn(3, obj.p, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(V), V @ H_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.hessian(chunk=16), H_ref, rtol=1e-10, atol=1e-12)


def test_directional_derivatives_equal_gradient_dot_products():
    obj, X, y = _mlp_problem()
    S = torch.randn(2, obj.p, dtype=torch.float64)
    torch.testing.assert_close(obj.directional(S, X, y), obj.grads(X, y) @ S.T, rtol=1e-10, atol=1e-12)


def test_risk_and_gradient_match_reference():
    obj, X, y = _mlp_problem()
    theta = obj.theta.clone().requires_grad_(True)
    ref = _reference_risk(obj, X, y)(theta)
    (g_ref,) = torch.autograd.grad(ref, theta)
    val, g = obj.risk(with_grad=True)
    torch.testing.assert_close(val, ref.detach())
    torch.testing.assert_close(g, g_ref)


def test_params_in_scope_restrict_theta_and_leave_the_model_untouched():
    obj, X, y = _mlp_problem()
    before = {k: v.clone() for k, v in obj.model.state_dict().items()}
    last = ik.Objective(obj.model, "cross_entropy", (X, y), params=["head.weight", "head.bias"])
    assert last.p == 4 * 3 + 3
    last.hvp(torch.ones(last.p, dtype=torch.float64))
    for k, v in obj.model.state_dict().items():
        assert torch.equal(v, before[k])


class _Twice(ik.Objective):
    """The training data held once, every sum over it counted twice by the reduction hook: the
    hook of a sharded objective, simulated in one process with two identical shards."""

    @property
    def n(self):
        return 2 * len(self.train)

    def reduce(self, total):
        return 2 * total


def test_every_sum_over_the_training_data_goes_through_the_reduction_hook():
    obj, X, y = _mlp_problem()
    twice = _Twice(obj.model, "cross_entropy", (X, y), l2=0.1, batch_size=7)
    both = ik.Objective(obj.model, "cross_entropy", (torch.cat([X, X]), torch.cat([y, y])), l2=0.1, batch_size=7)
    V = torch.randn(3, obj.p, dtype=torch.float64)
    torch.testing.assert_close(twice.hvp(V), both.hvp(V), rtol=1e-12, atol=1e-14)
    for a, b in zip(twice.risk(with_grad=True), both.risk(with_grad=True)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for name in ("kfac", "ekfac", "datainf"):  # curvature statistics too: the same fitted solver
        s1 = ik.make_solver(name, damping=0.1).fit(twice)
        s2 = ik.make_solver(name, damping=0.1).fit(both)
        torch.testing.assert_close(s1.solve(V), s2.solve(V), rtol=1e-9, atol=1e-12)


def test_stream_sums_a_weighted_term_over_batches_into_any_structure():
    obj, X, y = _mlp_problem()
    w = torch.rand(40, dtype=torch.float64)
    got = obj.stream(lambda x, y_, wb: {"count": torch.tensor(float(len(x))), "w": (wb[:, None] * x).sum(0)},
                     weights=w)
    torch.testing.assert_close(got["count"], torch.tensor(40.0))
    torch.testing.assert_close(got["w"], (w[:, None] * X).sum(0))
    with pytest.raises(ik.InputError, match="one per training point"):
        obj.stream(lambda *a: torch.zeros(()), weights=w[:-1])


def test_weighted_risk_and_hessian_are_those_of_the_weighted_sum():
    """R_w(theta) = (1/n) sum_i w_i L_i + (l2/2)||theta||^2 with autograd on the whole data."""
    obj, X, y = _mlp_problem()
    w = torch.rand(40, dtype=torch.float64)

    def risk(theta):
        losses = torch.nn.functional.cross_entropy(obj.outputs(theta, X), y, reduction="none")
        return (w * losses).sum() / 40 + 0.5 * obj.l2 * theta.dot(theta)

    theta = obj.theta.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(risk(theta), theta)
    val, g = obj.risk(with_grad=True, weights=w)
    torch.testing.assert_close(val, risk(obj.theta), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)
    V = torch.randn(2, obj.p, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(V, weights=w), V @ autograd_hessian(risk, obj.theta), rtol=1e-10, atol=1e-12)
