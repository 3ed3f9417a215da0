"""Objective: per-example gradients, HVPs and the Hessian equal autograd's exact values."""

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
