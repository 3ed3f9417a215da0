"""Curvature diagnostics and numerical failure: negative curvature is reported with the smallest
eigenvalue and a damping that then works; LiSSA divergence is caught within tens of steps; CG
non-convergence warns with its residuals."""

import re
import warnings

import pytest
import torch

import influencekit as ik
from influencekit.experiments.models import MLP, LogisticRegression


@pytest.fixture(scope="module")
def saddle():
    """An untrained tanh MLP under mse: its Hessian has negative eigenvalues (p = 26)."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(40, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = MLP(3, (4,), 2).double().eval()
    obj = ik.Objective(model, "mse", (X, Y))
    lam = torch.linalg.eigvalsh(obj.hessian())
    assert lam[0] < -0.1 * lam[-1]  # the premise: clearly indefinite
    return model, obj, (X, Y), lam


def _step(message: str) -> int:
    return int(re.search(r"at step (\d+)", message).group(1))


def test_spectrum_finds_both_ends_of_an_indefinite_hessian(saddle):
    _, obj, _, lam = saddle
    sp = ik.spectrum(obj, steps=obj.p)
    assert abs(sp.min_eigenvalue - lam[0].item()) < 1e-8 and abs(sp.max_eigenvalue - lam[-1].item()) < 1e-8
    # fewer Lanczos steps than p: Ritz values lie inside the spectrum and the ends converge first
    rough = ik.spectrum(obj, steps=12)
    assert lam[0].item() - 1e-10 <= rough.min_eigenvalue < 0.9 * lam[0].item()
    assert 0.95 * lam[-1].item() < rough.max_eigenvalue <= lam[-1].item() + 1e-10
    assert sp.suggested_damping > -lam[0].item()


def test_a_positive_definite_hessian_needs_no_damping():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(30, 3, generator=g, dtype=torch.float64)
    obj = ik.Objective(LogisticRegression(3).double().eval(), "logistic", (X, (X[:, 0] > 0).long()), l2=0.1)
    assert ik.spectrum(obj, steps=obj.p).min_eigenvalue >= 0.1 - 1e-10  # l2 I bounds it below
    assert ik.suggest_damping(obj) == 0.0


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_negative_curvature_reports_the_smallest_eigenvalue_and_its_damping_then_works(saddle, solver):
    model, obj, (X, Y), lam = saddle
    inf = ik.Influence(model, "mse", (X, Y), solver=solver)
    with pytest.raises(ik.NegativeCurvatureError, match=r"[Uu]se damping >= ") as e:
        inf.up_loss((X[:3], Y[:3]))
    assert e.value.min_eigenvalue == pytest.approx(lam[0].item(), rel=1e-6)
    d = e.value.suggested_damping
    assert f"{d:.3e}" in str(e.value)
    assert torch.linalg.eigvalsh(obj.hessian() + d * torch.eye(obj.p, dtype=torch.float64))[0] > 0
    options = {"tol": 1e-10, "max_iter": 300} if solver == "cg" else {}
    damped = ik.Influence(model, "mse", (X, Y), solver=solver, damping=d, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # not a stationary point: expected here
        warnings.simplefilter("error", ik.ConvergenceWarning)
        got = damped.up_loss((X[:3], Y[:3]))
    H = obj.hessian() + d * torch.eye(obj.p, dtype=torch.float64)
    G_test, G = obj.grads(X[:3], Y[:3]), obj.grads(X, Y)
    torch.testing.assert_close(got, -G_test @ torch.linalg.solve(H, G.T), rtol=1e-5, atol=1e-8)


def test_lissa_on_negative_curvature_stops_within_tens_of_steps_and_names_the_damping(saddle):
    _, obj, (X, Y), lam = saddle
    lissa = ik.make_solver("lissa", depth=10_000, batch_size=40).fit(obj)
    with pytest.raises(ik.DivergenceError, match=r"negative curvature .* Increase damping to >= ") as e:
        lissa.solve(obj.grads(X[:2], Y[:2]))
    assert _step(str(e.value)) <= 100  # of 10,000: the bound ||h_j|| <= (j+1)||v|| trips early
    d = float(re.search(r">= ([0-9.e+-]+)", str(e.value)).group(1))
    assert d > -lam[0].item()
    fixed = ik.make_solver("lissa", depth=300, batch_size=40, damping=d).fit(obj)
    assert torch.isfinite(fixed.solve(obj.grads(X[:2], Y[:2]))).all()


@pytest.mark.parametrize("scale", [0.05, 0.5])
def test_lissa_with_too_small_a_scale_stops_early_and_names_the_scale(saddle, scale):
    _, obj, (X, Y), lam = saddle
    lissa = ik.make_solver("lissa", depth=10_000, batch_size=40, damping=1.0, scale=scale).fit(obj)
    assert scale < lam[-1].item() + 1.0  # the premise: scale below lambda_max(H + dI)
    with pytest.raises(ik.DivergenceError, match=rf"Increase scale \(now {scale:.3e}") as e:
        lissa.solve(obj.grads(X[:2], Y[:2]))
    assert _step(str(e.value)) <= 50


def test_cg_that_runs_out_of_iterations_warns_with_the_residual_it_stopped_at(saddle):
    model, obj, (X, Y), _ = saddle
    cg = ik.make_solver("cg", damping=1e-3 + ik.suggest_damping(obj), max_iter=3, tol=1e-12).fit(obj)
    V = obj.grads(X[:4], Y[:4])
    with pytest.warns(ik.ConvergenceWarning, match=r"after 3 iterations with relative residual") as w:
        Xs = cg.solve(V)
    assert cg.residuals.shape == (4, 4)  # [iterations + 1, k]: the starting residual 1, then one per step
    torch.testing.assert_close(cg.residuals[0], torch.ones(4, dtype=torch.float64))
    A = obj.hessian() + cg.damping * torch.eye(obj.p, dtype=torch.float64)
    true_rel = (V - Xs @ A).norm(dim=1) / V.norm(dim=1)
    torch.testing.assert_close(cg.residuals[-1], true_rel, rtol=1e-6, atol=1e-12)
    assert f"{true_rel.max().item():.2e}" in str(w[0].message)
