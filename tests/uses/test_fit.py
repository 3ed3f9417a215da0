"""uses.fit: converged linear fits and the closed-form logistic / multinomial Hessian and self-influence."""

import pytest
import torch

from influencekit import Influence
from influencekit.errors import InputError
from influencekit.objective import Objective
from influencekit.uses.fit import (
    fit_linear,
    logistic_hessian,
    logistic_self_influence,
    multinomial_hessian,
    multinomial_self_influence,
)


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
