"""K-FAC / EK-FAC: exact where the Kronecker factorisation is exact, EK-FAC's refitted
eigenvalues at least as close to the curvature as K-FAC's, and closer influence on an MLP;
small layers kept as exact blocks (``exact_block``) are the exact Gauss-Newton blocks.
Tests of the factorisation itself pass exact_block=0 (every layer factorised)."""

import pytest
import torch
from torch import nn

import influencekit as ik
from helpers import digits_mlp


def _exact(obj, V, d=0.0):
    H = obj.hessian()
    return torch.linalg.solve(H + d * torch.eye(obj.p, dtype=H.dtype), V.T).T


def _linear_regression(n=40, d=6, l2=0.05):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, 1, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, 1, generator=g,
                                                                                      dtype=torch.float64)
    obj = ik.Objective(nn.Linear(d, 1).double(), "mse", (X, y), l2=l2, batch_size=16)
    return obj


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
@pytest.mark.parametrize("fisher", ["ggn", "empirical"])
def test_single_output_linear_regression_is_exact(name, fisher):
    # one output and half squared error: S = 1 and A = E[[x;1][x;1]^T], so S (x) A is the Hessian
    # (the empirical Fisher is not: its S is the mean squared residual, so only ggn is exact)
    obj = _linear_regression()
    V = obj.grads(*obj.train.take(slice(0, 5)))
    solver = ik.make_solver(name, damping=0.03, fisher=fisher, exact_block=0).fit(obj)
    X = solver.solve(V)
    if fisher == "ggn":
        torch.testing.assert_close(X, _exact(obj, V, 0.03), rtol=1e-10, atol=1e-12)
    else:
        assert ((X - _exact(obj, V, 0.03)).norm() / X.norm()).item() > 1e-3


def _dense(solver):
    """The block's curvature approximation (Q_S (x) Q_A) diag(lam) (Q_S (x) Q_A)^T (one layer)."""
    fc = solver.factors[0]
    Q = torch.kron(fc["QS"], fc["QA"])
    return Q @ torch.diag(fc["eigenvalues"].flatten()) @ Q.T


def test_ekfac_eigenvalues_fit_the_ggn_at_least_as_well_as_kfac():
    # linear softmax: GGN = H - l2 I. EK-FAC's diagonal is the Frobenius-optimal one in K-FAC's basis.
    g = torch.Generator().manual_seed(1)
    X = torch.randn(60, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.3, 1.0], dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)
    obj = ik.Objective(nn.Linear(4, 3).double(), "cross_entropy", (X, y), l2=0.1)
    # theta is [W.flatten(), b]; the block layout is the rows of [W | b]
    block = torch.cat([torch.arange(15).reshape(3, 5)[:, :4].flatten(), torch.arange(15).reshape(3, 5)[:, 4]])
    to_block = block.argsort()
    ggn = (obj.hessian() - 0.1 * torch.eye(15, dtype=torch.float64))[to_block][:, to_block]
    k = ik.make_solver("kfac", damping=0.0, exact_block=0).fit(obj)
    e = ik.make_solver("ekfac", damping=0.0, exact_block=0).fit(obj)
    err_k, err_e = (_dense(k) - ggn).norm().item(), (_dense(e) - ggn).norm().item()
    assert err_e < 0.9 * err_k, (err_e, err_k)
    # and the trace (sum of eigenvalues) is exact for EK-FAC
    assert abs(e.factors[0]["eigenvalues"].sum().item() - ggn.trace().item()) < 1e-10


def test_ekfac_influence_correlates_with_exact_better_than_kfac_on_an_mlp():
    obj, (Xte, yte) = digits_mlp(hidden=8)
    G = obj.grads(Xte[:10].double(), yte[:10])
    train_grads = obj.grads(*obj.train.take(slice(0, obj.n)))
    # damping 0.01 as for a network in practice (the smallest eigenvalues are not worth trusting)
    exact = G @ torch.linalg.solve(obj.hessian() + 0.01 * torch.eye(obj.p, dtype=G.dtype), train_grads.T)

    def corr(name, **opts):
        S = ik.make_solver(name, damping=0.01, **opts).fit(obj).solve(G)
        sc = S @ train_grads.T
        return torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(sc, exact)]).mean().item()

    ck, ce = corr("kfac", exact_block=0), corr("ekfac", exact_block=0)
    assert ce > ck and ce > 0.9, (ck, ce)
    # every layer kept exact (the block-diagonal GGN, what the factorisation approximates) is closer still
    assert corr("ekfac", exact_block=10_000) > ce + 0.001


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
def test_a_layer_kept_exact_is_its_gauss_newton_block(name):
    # the last layer of an MLP: the logits are linear in its parameters, so its GGN block equals
    # the loss Hessian's block; a V on that layer alone is solved with that block alone
    obj, _ = digits_mlp(hidden=8)  # blocks: 64 -> 8 (520 parameters), 8 -> 10 (90)
    solver = ik.make_solver(name, damping=0.02, exact_block=100).fit(obj)
    assert ["Q" in fc for fc in solver.factors] == [False, True]
    last = slice(520, 610)
    V = torch.zeros(3, obj.p, dtype=torch.float64)
    V[:, last] = obj.grads(*obj.train.take(slice(0, 3)))[:, last]
    X = solver.solve(V)
    block = obj.hessian()[last, last]  # includes l2 I
    torch.testing.assert_close(X[:, last], torch.linalg.solve(block + 0.02 * torch.eye(90, dtype=block.dtype),
                                                              V[:, last].T).T, rtol=1e-9, atol=1e-12)
    assert X[:, :520].abs().max().item() == 0.0


def test_a_linear_softmax_model_kept_exact_is_exact():
    # one layer, its GGN = the Hessian of the mean loss: the solve is the exact one
    g = torch.Generator().manual_seed(2)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64)
    obj = ik.Objective(nn.Linear(4, 3).double(), "cross_entropy", (X, torch.randint(0, 3, (50,), generator=g)),
                       l2=0.1)
    V = obj.grads(*obj.train.take(slice(0, 4)))
    for name in ("kfac", "ekfac"):
        X = ik.make_solver(name, damping=0.01).fit(obj).solve(V)  # 15 parameters <= the default
        torch.testing.assert_close(X, _exact(obj, V, 0.01), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [-1, 1.5, "all"])
def test_exact_block_must_be_a_parameter_count(bad):
    with pytest.raises(ik.InputError, match="exact_block"):
        ik.make_solver("ekfac", exact_block=bad)


def test_auto_damping_is_a_tenth_of_the_mean_eigenvalue_per_layer():
    obj = _linear_regression(l2=0.0)
    s = ik.make_solver("ekfac").fit(obj)
    lam = s.factors[0]["eigenvalues"]
    assert s.layer_damping == [pytest.approx(0.1 * lam.mean().item(), rel=1e-12)]
    V = obj.grads(*obj.train.take(slice(0, 3)))
    torch.testing.assert_close(s.solve(V), _exact(obj, V, s.layer_damping[0]), rtol=1e-10, atol=1e-12)
    assert s.settings() == {"solver": "ekfac", "damping": "auto", "fisher": "ggn", "batch_size": None,
                            "exact_block": 1024}


def test_singular_curvature_without_damping_is_refused_with_a_value():
    X = torch.zeros(10, 3, dtype=torch.float64)
    X[:, 0] = torch.arange(10.0)  # two input columns are always 0: A is singular
    obj = ik.Objective(nn.Linear(3, 1, bias=False).double(), "mse", (X, torch.randn(10, 1, dtype=torch.float64)))
    with pytest.raises(ik.NegativeCurvatureError, match="use damping >="):
        ik.make_solver("kfac", damping=0.0).fit(obj)


def test_unsupported_layers_are_refused_at_fit():
    X = torch.randn(10, 3, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 1)).double()
    obj = ik.Objective(model, "mse", (X, torch.randn(10, 1, dtype=torch.float64)))
    with pytest.raises(ik.UnsupportedLayerError, match="cg"):
        ik.make_solver("ekfac").fit(obj)
