"""DataInf: per parameter block, the average of per-example Sherman-Morrison inverses of the damped
empirical Fisher, (1/n) sum_i (g_i g_i^T + mu I)^-1, with mu = l2 + d."""

import pytest
import torch
from torch import nn

import influencekit as ik
from helpers import digits_lora
from influencekit.errors import InputError
from influencekit.solvers.datainf import AUTO_DAMPING


def _problem(n=25, l2=1e-2):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    return ik.Objective(model, "cross_entropy", (X, y), l2=l2, batch_size=7), (X, y)


def _by_definition(obj, V, d):
    """(1/n) sum_i (g_i g_i^T + mu I)^-1 V block by block, each inverse formed explicitly."""
    G = obj.grads(obj.train.x, obj.train.y)
    out = []
    for g, v, dl in zip(obj.blocks(G).values(), obj.blocks(V).values(), d):
        mu = obj.l2 + dl
        eye = torch.eye(g.shape[1], dtype=g.dtype)
        out.append(sum(torch.linalg.solve(torch.outer(gi, gi) + mu * eye, v.T).T for gi in g) / len(g))
    return torch.cat(out, 1)


@pytest.mark.parametrize("cache", [1 << 25, 0])  # gradients kept, or recomputed per solve
def test_solve_is_the_average_of_per_example_damped_inverses(cache):
    obj, (X, y) = _problem()
    V = obj.grads(X[:3] + 0.5, y[:3])
    solver = ik.make_solver("datainf", damping=0.05, cache=cache).fit(obj)
    torch.testing.assert_close(solver.solve(V), _by_definition(obj, V, [0.05] * len(obj.names)),
                               rtol=1e-10, atol=1e-12)


def test_with_one_training_point_it_is_the_exact_inverse_of_the_damped_fisher():
    obj, (X, y) = _problem(n=1)
    g = obj.grads(X, y)[0]
    V = obj.grads(X + 1.0, y)
    F = torch.block_diag(*[torch.outer(b[0], b[0]) for b in obj.blocks(g[None]).values()])  # per-block g g^T
    mu = obj.l2 + 0.1
    exact = torch.linalg.solve(F + mu * torch.eye(obj.p, dtype=F.dtype), V.T).T
    torch.testing.assert_close(ik.make_solver("datainf", damping=0.1).fit(obj).solve(V), exact, rtol=1e-10,
                               atol=1e-12)


def test_automatic_damping_is_a_tenth_of_each_blocks_mean_fisher_eigenvalue():
    obj, (X, y) = _problem()
    solver = ik.make_solver("datainf").fit(obj)
    G = obj.grads(X, y)
    expected = [AUTO_DAMPING * (g * g).sum().item() / len(X) / g.shape[1] for g in obj.blocks(G).values()]
    assert solver.block_damping == pytest.approx(expected, rel=1e-12)
    assert solver.settings()["damping"] == "auto"


def test_no_l2_and_no_damping_is_refused_with_the_fix():
    obj, _ = _problem(l2=0.0)
    with pytest.raises(InputError, match="damping"):
        ik.make_solver("datainf", damping=0.0).fit(obj)


def test_on_lora_adapters_it_follows_exact_influence():
    obj, (Xte, yte) = digits_lora()
    train, test = (obj.train.x, obj.train.y), (Xte[:10], yte[:10])
    ref = ik.Influence(obj.model, "cross_entropy", train, l2=1e-3, solver="exact", damping=0.01).up_loss(test)
    got = ik.Influence(obj.model, "cross_entropy", train, l2=1e-3, solver="datainf", damping=0.01).up_loss(test)
    assert torch.corrcoef(torch.stack([got.flatten(), ref.flatten()]))[0, 1] > 0.95
