"""PCG: conjugate gradients preconditioned by EK-FAC reaches the exact solve in fewer
iterations than plain CG."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import influencekit as ik
from influencekit.experiments import datasets


@pytest.fixture(scope="module")
def problem():
    # a tanh MLP regressing one-hot digits from inputs mixed by a random rotation and rescaled
    # over three decades: the Hessian's conditioning comes from the input covariance, which
    # EK-FAC's A factor captures
    Xtr, ytr, _, _ = datasets.digits()
    Xtr, ytr = Xtr[:250].double(), ytr[:250]
    Q, _ = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    X = (Xtr - Xtr.mean(0)) @ Q * torch.logspace(-1.5, 1.5, 64, dtype=torch.float64)
    Y = F.one_hot(ytr, 10).double()
    model = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)).double()
    obj = ik.Objective(model, "mse", (X, Y), l2=1e-3)
    with warnings.catch_warnings():  # a few hundred L-BFGS steps: near-stationary is enough here
        warnings.simplefilter("ignore")
        obj = ik.Objective(obj.to_model(ik.minimize(obj, max_iter=300)), "mse", (X, Y), l2=1e-3)
    return obj, obj.hessian(), obj.grads(X[:5], Y[:5])


def test_pcg_matches_exact_to_1e_5_in_fewer_iterations_than_cg(problem):
    obj, H, V = problem
    exact = torch.linalg.solve(H + 1e-2 * torch.eye(obj.p, dtype=H.dtype), V.T).T
    cg = ik.make_solver("cg", damping=1e-2, tol=1e-8).fit(obj)
    pcg = ik.make_solver("pcg", damping=1e-2, tol=1e-8).fit(obj)
    Xc, Xp = cg.solve(V), pcg.solve(V)
    assert ((Xp - exact).norm() / exact.norm()).item() < 1e-5
    assert ((Xc - exact).norm() / exact.norm()).item() < 1e-5
    assert pcg.iterations <= 0.8 * cg.iterations, (pcg.iterations, cg.iterations)


def test_pcg_settings_name_its_preconditioner_options(problem):
    obj, _, _ = problem
    s = ik.make_solver("pcg", damping=0.01, tol=1e-7, fisher="empirical", exact_block=0)
    assert s.settings() == {"solver": "pcg", "damping": 0.01, "tol": 1e-7, "max_iter": None, "block": True,
                            "fisher": "empirical", "batch_size": None, "exact_block": 0, "row_bases": 1 << 22}
    assert s.preconditioner_solver.exact_block == 0
    assert s.needs == {"hvp", "layers"}


def test_pcg_refuses_layers_it_cannot_precondition():
    X = torch.randn(10, 3, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 1)).double()
    obj = ik.Objective(model, "mse", (X, torch.randn(10, 1, dtype=torch.float64)))
    with pytest.raises(ik.UnsupportedLayerError, match="solver='cg'"):
        ik.make_solver("pcg", exact_block=0).fit(obj)  # a 6-parameter LayerNorm is kept exact by default
