"""Every inverse-HVP solver against the explicit float64 solve (H + dI)^{-1} v."""

import warnings

import pytest
import torch

import influencekit as ik
from helpers import Saddle, logistic_digits


@pytest.fixture(scope="module")
def problem():
    obj, _, _ = logistic_digits()
    H = obj.hessian()
    V = obj.grads(*obj.train.take(slice(0, 5)))
    return obj, H, V


def _exact(H, V, d=0.0):
    return torch.linalg.solve(H + d * torch.eye(H.shape[0], dtype=H.dtype), V.T).T


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_exact_solver_equals_a_direct_solve(problem):
    obj, H, V = problem
    for d in (0.0, 0.05):
        X = ik.make_solver("exact", damping=d).fit(obj).solve(V)
        assert _rel(X, _exact(H, V, d)) < 1e-10


def test_cg_matches_exact_to_1e_5_and_reports_residuals(problem):
    obj, H, V = problem
    cg = ik.make_solver("cg", tol=1e-10).fit(obj)
    X = cg.solve(V)
    assert _rel(X, _exact(H, V)) < 1e-5
    assert cg.residuals.shape[1] == V.shape[0] and cg.residuals[-1].max() <= 1e-10


def test_cg_solves_each_right_hand_side_as_if_alone(problem):
    obj, H, V = problem
    together = ik.make_solver("cg", tol=1e-10).fit(obj).solve(V)
    alone = ik.make_solver("cg", tol=1e-10).fit(obj).solve(V[2])
    torch.testing.assert_close(together[2], alone, rtol=1e-7, atol=1e-9)


def test_block_cg_shares_one_krylov_space_so_it_needs_fewer_iterations(problem):
    obj, H, V = problem
    V = torch.cat([V, obj.grads(*obj.train.take(slice(5, 20)))])  # 20 right-hand sides
    block = ik.make_solver("cg", tol=1e-10).fit(obj)
    single = ik.make_solver("cg", tol=1e-10, block=False).fit(obj)
    Xb, Xs = block.solve(V), single.solve(V)
    assert _rel(Xb, _exact(H, V)) < 1e-8 and _rel(Xs, _exact(H, V)) < 1e-8
    assert block.iterations < 0.6 * single.iterations, (block.iterations, single.iterations)
    true_rel = (V - Xb @ H).norm(dim=1) / V.norm(dim=1)  # the residuals it reports are the true ones
    torch.testing.assert_close(block.residuals[-1], true_rel, rtol=1e-3, atol=1e-12)


def test_block_cg_survives_dependent_zero_and_tiny_right_hand_sides(problem):
    """Columns that coincide, vanish or differ in scale by 1e12 must not break the shared basis."""
    obj, H, V = problem
    W = torch.stack([V[0], V[0], 2 * V[0], torch.zeros_like(V[0]), 1e-6 * V[1], 1e6 * V[2], V[3] + V[4]])
    X = ik.make_solver("cg", tol=1e-10).fit(obj).solve(W)
    exact = _exact(H, W)
    for j in range(len(W)):
        if j == 3:
            assert X[j].abs().max() == 0
        else:
            assert _rel(X[j], exact[j]) < 1e-8, j


def test_cg_warns_with_residuals_when_it_runs_out_of_iterations(problem):
    obj, H, V = problem
    cg = ik.make_solver("cg", max_iter=2).fit(obj)
    with pytest.warns(ik.ConvergenceWarning, match="relative residual"):
        cg.solve(V)
    assert cg.iterations == 2 and cg.residuals[-1].max() > cg.tol


def test_lissa_matches_exact_to_5e_2(problem):
    obj, H, V = problem
    lissa = ik.make_solver("lissa", depth=600, repeats=4, batch_size=100).fit(obj)
    assert _rel(lissa.solve(V), _exact(H, V)) < 5e-2


def test_lissa_divergence_is_detected_early_with_advice(problem):
    obj, H, V = problem
    lissa = ik.make_solver("lissa", depth=5000, scale=0.1).fit(obj)  # scale far below lambda_max
    with pytest.raises(ik.DivergenceError, match="Increase scale") as e:
        lissa.solve(V)
    step = int(str(e.value).split("step ")[1].split()[0])
    assert step < 100


def test_negative_curvature_is_reported_with_a_damping_that_fixes_it():
    torch.manual_seed(0)
    X, y = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, dtype=torch.float64)

    obj = ik.Objective(Saddle(), "mse", (X, y))
    with pytest.raises(ik.NegativeCurvatureError) as e:
        ik.make_solver("exact").fit(obj)
    assert e.value.min_eigenvalue < 0
    with pytest.raises(ik.NegativeCurvatureError):
        ik.make_solver("cg").fit(obj).solve(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64))
    fixed = ik.make_solver("exact", damping=e.value.suggested_damping).fit(obj)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(fixed.solve(torch.ones(2, dtype=torch.float64))).all()


def test_unknown_solver_names_the_choices():
    with pytest.raises(ik.InputError, match="choose one of"):
        ik.make_solver("newton")


@pytest.mark.parametrize("name", sorted(ik.SOLVERS))
def test_automatic_damping_is_offered_by_the_curvature_solvers_and_refused_by_the_rest_with_the_fix(name):
    if ik.SOLVERS[name].automatic_damping:
        assert ik.make_solver(name, damping=None).auto_damping
    else:
        with pytest.raises(ik.InputError, match=r"offered by \['datainf', 'ekfac', 'kfac'\].*needs a number"):
            ik.make_solver(name, damping=None)
