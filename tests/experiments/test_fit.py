"""experiments.fit: converged linear fits and the closed-form logistic / multinomial Hessian and self-influence."""

import pytest
import torch

from influencekit import Influence
from influencekit.errors import InputError
from influencekit.experiments import fit
from influencekit.experiments.fit import (
    fit_linear,
    linear_model,
    linear_risk,
    logistic_hessian,
    logistic_self_influence,
    multinomial_hessian,
    multinomial_self_influence,
)
from influencekit.objective import Objective
from influencekit.retrain import weighted_risk


def _problem(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = ((X[:, 0] + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)) > 0).long()
    return X, y


@pytest.mark.parametrize("n,d,l2", [(80, 6, 1e-2), (30, 50, 1e-3)])  # p < n (primal) and p > n (dual)
def test_logistic_closed_forms_equal_the_generic_hvp_hessian_and_exact_self_influence(n, d, l2):
    X, y = _problem(n, d)
    model = fit_linear(X, y, l2, 2)
    H = Objective(model, "logistic", (X, y), l2=l2).hessian()
    torch.testing.assert_close(logistic_hessian(model, X, y, l2), H, rtol=1e-10, atol=1e-12)
    ref = Influence(model, "logistic", (X, y), l2=l2, solver="exact").self_influence()
    got = logistic_self_influence(model, X, y, l2)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-12)
    assert (got <= 0).all()


def test_logistic_self_influence_needs_positive_l2():
    X, y = _problem(10, 3)
    with pytest.raises(InputError, match="l2 > 0"):
        logistic_self_influence(fit_linear(X, y, 1e-2, 2), X, y, 0.0)


def test_closed_forms_leave_the_users_model_untouched():
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(30, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (30,), generator=g)
    model = fit_linear(X, y, 1e-2, 2).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logistic_self_influence(model, X, y, 1e-2)
    logistic_hessian(model, X, y, 1e-2)
    for k, v in model.state_dict().items():  # still float32, same values: computed on float64 copies
        assert v.dtype == torch.float32 and torch.equal(v, before[k])


@pytest.mark.parametrize("n,d,classes", [(90, 5, 4), (20, 8, 3)])  # p < n and p > n
def test_multinomial_closed_forms_equal_the_generic_hvp_hessian_and_exact_self_influence(n, d, classes):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    model = fit_linear(X, y, 1e-2, classes)
    H = Objective(model, "cross_entropy", (X, y), l2=1e-2).hessian()  # Objective's order: weight rows, then bias
    torch.testing.assert_close(multinomial_hessian(model, X, y, 1e-2), H, rtol=1e-10, atol=1e-12)
    ref = Influence(model, "cross_entropy", (X, y), l2=1e-2, solver="exact").self_influence()
    got = multinomial_self_influence(model, X, y, 1e-2, chunk=7)  # chunks that do not divide n
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-12)
    assert (got <= 0).all()


def test_multinomial_self_influence_needs_positive_l2_and_leaves_the_model_untouched():
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    model = fit_linear(X, y, 1e-2, 3).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match="l2 > 0"):
        multinomial_self_influence(model, X, y, 0.0)
    multinomial_self_influence(model, X, y, 1e-2)
    multinomial_hessian(model, X, y, 1e-2)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k])


def _sparse_problem(n, d, classes, seed=0):
    """Word-count-like data: ~2% nonzero, labels tied to a few columns."""
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(n, d, generator=g) < 0.02).double() * torch.randint(1, 4, (n, d), generator=g).double()
    y = (X[:, :classes] * torch.arange(1, classes + 1)).argmax(1)
    return X, y


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_linear_risk_is_the_objectives_risk_and_gradient(classes, layout):
    X, y = _sparse_problem(60, 40, classes)
    model = linear_model(40, classes)
    weight = model.weight if classes > 2 else model.linear.weight
    torch.nn.init.normal_(weight, generator=torch.Generator().manual_seed(1))
    obj = Objective(model, "logistic" if classes == 2 else "cross_entropy", (X, y), l2=1e-2)
    theta = obj.theta + 0.1
    Xl = X.to_sparse_csr() if layout == "csr" else X
    value, grad = linear_risk(Xl, y, 1e-2, classes)(theta)
    ref_value, ref_grad = weighted_risk(obj, theta)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-14)


def test_linear_risk_reads_binary_labels_in_either_coding():
    X, y = _sparse_problem(50, 30, 2)
    risk01, riskpm = linear_risk(X, y, 1e-3, 2), linear_risk(X, 2 * y - 1, 1e-3, 2)
    theta = torch.linspace(-1, 1, 31, dtype=torch.float64)
    for a, b in zip(risk01(theta), riskpm(theta)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("classes", [2, 3])
def test_fit_linear_on_sparse_data_reaches_the_same_stationary_point_as_the_dense_products(classes, monkeypatch):
    X, y = _sparse_problem(200, 350, classes)  # ~2% nonzero: fitted through a CSR copy
    sparse_fit = fit_linear(X, y, 1e-3, classes)
    monkeypatch.setattr(fit, "SPARSE_BELOW", 0.0)  # force the dense products
    dense_fit = fit_linear(X, y, 1e-3, classes)
    obj = Objective(sparse_fit, "logistic" if classes == 2 else "cross_entropy", (X, y), l2=1e-3)
    assert weighted_risk(obj, obj.theta)[1].abs().max() < 1e-6  # stationary for the library's own objective
    for a, b in zip(sparse_fit.parameters(), dense_fit.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fit_linear_warm_start_leaves_the_initial_model_untouched():
    X, y = _problem(40, 3)
    init = fit_linear(X, y, 1e-1, 2)
    before = [p.clone() for p in init.parameters()]
    refit = fit_linear(X, 1 - y, 1e-1, 2, init=init)
    assert all(torch.equal(a, b) for a, b in zip(init.parameters(), before))
    assert not torch.equal(refit.linear.weight, init.linear.weight)


def test_fits_and_self_influence_on_sparse_data_match_the_dense_reference():
    X, y = _sparse_problem(30, 60, 2)  # p > n and ~2% nonzero: the dual's Gram matrix through a sparse copy
    model = fit_linear(fit.fit_input(X), y, 1e-2, 2)  # a pre-converted CSR input, as repeated fits pass it
    assert fit.fit_input(X).layout == torch.sparse_csr
    for a, b in zip(model.parameters(), fit_linear(X, y, 1e-2, 2).parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ref = Influence(model, "logistic", (X, y), l2=1e-2, solver="exact").self_influence()
    torch.testing.assert_close(logistic_self_influence(model, X, y, 1e-2), ref, rtol=1e-8, atol=1e-12)
