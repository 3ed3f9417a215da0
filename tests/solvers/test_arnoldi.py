"""Arnoldi/Lanczos low-rank inverse: exact at full rank, and at low rank the exact inverse on
the top-r eigenspace of H."""

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


def test_full_rank_arnoldi_equals_the_exact_solve(problem):
    obj, H, V = problem
    X = ik.make_solver("arnoldi", rank=obj.p, block=16, damping=0.01).fit(obj).solve(V)
    exact = torch.linalg.solve(H + 0.01 * torch.eye(obj.p, dtype=H.dtype), V.T).T
    assert ((X - exact).norm() / exact.norm()).item() < 1e-8


def test_low_rank_arnoldi_is_the_inverse_on_the_top_eigenspace(problem):
    obj, H, V = problem
    lam, Q = torch.linalg.eigh(H)
    top = Q[:, -5:]
    expected = ((V @ top) / (lam[-5:] + 0.01)) @ top.T
    s = ik.make_solver("arnoldi", rank=5, krylov=50, damping=0.01).fit(obj)
    torch.testing.assert_close(s.eigenvalues.sort().values, lam[-5:], rtol=1e-6, atol=0)
    assert ((s.solve(V) - expected).norm() / expected.norm()).item() < 1e-4


def test_negative_curvature_on_the_kept_subspace_names_a_damping():
    X, y = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, dtype=torch.float64)

    obj = ik.Objective(Saddle(), "mse", (X, y))
    with pytest.raises(ik.NegativeCurvatureError, match="use damping >=") as e:
        ik.make_solver("arnoldi", rank=2).fit(obj)
    H = obj.hessian()
    lam = torch.linalg.eigvalsh(H + e.value.suggested_damping * torch.eye(2, dtype=H.dtype))
    assert lam.min() > 0


def test_settings_are_json_values():
    s = ik.make_solver("arnoldi", rank=7, damping=0.1)
    assert s.settings() == {"solver": "arnoldi", "damping": 0.1, "rank": 7, "krylov": None, "block": 10, "seed": 0}
