"""K-FAC / EK-FAC: exact where the Kronecker factorisation is exact, EK-FAC's refitted
eigenvalues at least as close to the curvature as K-FAC's, and closer influence on an MLP;
small layers kept as exact blocks (``exact_block``) are the exact Gauss-Newton blocks, and
EK-FAC's per-row input bases (``row_bases``) generalise its diagonal. Tests of the factorisation
itself pass exact_block=0 (every layer factorised), of EK-FAC's diagonal row_bases=0."""

import pytest
import torch
from torch import nn

import influencekit as ik
from helpers import digits_lora, digits_mlp


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
    """The block's curvature approximation (one layer): (Q_S (x) Q_A) diag(lam) (Q_S (x) Q_A)^T, or
    with row bases (Q_S (x) I) blockdiag(U_i diag(lam_i) U_i^T) (Q_S (x) I)^T."""
    fc = solver.factors[0]
    if "UA" in fc:
        rows = [U @ torch.diag(lam) @ U.T for U, lam in zip(fc["UA"], fc["eigenvalues"])]
        Q = torch.kron(fc["QS"].contiguous(), torch.eye(fc["UA"].shape[1], dtype=fc["QS"].dtype))
        return Q @ torch.block_diag(*rows) @ Q.T
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
    e = ik.make_solver("ekfac", damping=0.0, exact_block=0, row_bases=0).fit(obj)
    r = ik.make_solver("ekfac", damping=0.0, exact_block=0).fit(obj)  # row bases (the default)
    assert "QA" in e.factors[0] and "UA" in r.factors[0]
    err_k, err_e, err_r = ((_dense(s) - ggn).norm().item() for s in (k, e, r))
    assert err_e < 0.9 * err_k, (err_e, err_k)
    # the row bases contain EK-FAC's diagonal as a special case: closer still
    assert err_r < err_e, (err_r, err_e)
    # and the trace (sum of eigenvalues) is exact for both
    for s in (e, r):
        assert abs(s.factors[0]["eigenvalues"].sum().item() - ggn.trace().item()) < 1e-10


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

    ck, ce = corr("kfac", exact_block=0), corr("ekfac", exact_block=0, row_bases=0)
    assert ce > ck and ce > 0.9, (ck, ce)
    # EK-FAC with a full input basis per output eigendirection (the default) is closer again
    assert corr("ekfac", exact_block=0) > ce + 0.002
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
@pytest.mark.parametrize("option", ["exact_block", "row_bases"])
def test_block_sizes_must_be_counts(option, bad):
    with pytest.raises(ik.InputError, match=option):
        ik.make_solver("ekfac", **{option: bad})


def test_row_bases_of_a_single_output_convolution_are_its_exact_block():
    # one output channel: Q_S = [1] and the one row's [cols, cols] moment is the whole GGN block;
    # the model is linear in its parameters and the loss is squared error, so that is the Hessian
    g = torch.Generator().manual_seed(3)
    X = torch.randn(30, 2, 6, 6, generator=g, dtype=torch.float64)
    model = nn.Sequential(nn.Conv2d(2, 1, 3), nn.Flatten()).double()
    obj = ik.Objective(model, "mse", (X, torch.randn(30, 16, generator=g, dtype=torch.float64)), l2=0.01)
    s = ik.make_solver("ekfac", damping=0.02, exact_block=0).fit(obj)
    assert "UA" in s.factors[0]
    V = obj.grads(*obj.train.take(slice(0, 4)))
    torch.testing.assert_close(s.solve(V), _exact(obj, V, 0.02), rtol=1e-9, atol=1e-12)


def test_row_bases_stop_at_their_memory_budget():
    obj, _ = digits_mlp(hidden=8)  # 64 -> 8: 8 x 65^2 = 33,800 entries; 8 -> 10: 10 x 9^2 = 810
    s = ik.make_solver("ekfac", damping=0.01, exact_block=0, row_bases=1000).fit(obj)
    assert ["UA" in fc for fc in s.factors] == [False, True]
    assert s.settings()["row_bases"] == 1000
    # K-FAC has no refit, hence no row bases: the base class owns the budget it reads, at zero
    k = ik.make_solver("kfac", damping=0.01, exact_block=0).fit(obj)
    assert k.row_bases == 0 and k.kinds == ["kronecker", "kronecker"]


def test_auto_damping_is_a_tenth_of_the_mean_eigenvalue_per_layer():
    obj = _linear_regression(l2=0.0)
    s = ik.make_solver("ekfac").fit(obj)
    lam = s.factors[0]["eigenvalues"]
    assert s.layer_damping == [pytest.approx(0.1 * lam.mean().item(), rel=1e-12)]
    V = obj.grads(*obj.train.take(slice(0, 3)))
    torch.testing.assert_close(s.solve(V), _exact(obj, V, s.layer_damping[0]), rtol=1e-10, atol=1e-12)
    assert s.settings() == {"solver": "ekfac", "damping": "auto", "fisher": "ggn", "batch_size": None,
                            "exact_block": 1024, "row_bases": 1 << 22}


def test_singular_curvature_without_damping_is_refused_with_a_value():
    X = torch.zeros(10, 3, dtype=torch.float64)
    X[:, 0] = torch.arange(10.0)  # two input columns are always 0: A is singular
    obj = ik.Objective(nn.Linear(3, 1, bias=False).double(), "mse", (X, torch.randn(10, 1, dtype=torch.float64)))
    with pytest.raises(ik.NegativeCurvatureError, match="use damping >="):
        ik.make_solver("kfac", damping=0.0).fit(obj)


def test_other_layers_over_exact_block_are_refused_at_fit():
    X = torch.randn(10, 3, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 1)).double()
    obj = ik.Objective(model, "mse", (X, torch.randn(10, 1, dtype=torch.float64)))
    with pytest.raises(ik.UnsupportedLayerError, match="6 parameters are at most exact_block = 5.*cg"):
        ik.make_solver("ekfac", exact_block=5).fit(obj)


class _Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(12, 3), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.emb(x).flatten(1))


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
@pytest.mark.parametrize("case", ["layernorm", "embedding"])
def test_a_small_layer_of_another_type_is_kept_as_its_exact_block(name, case):
    # the logits are linear in a LayerNorm's scale and shift (and in an embedding table), so with
    # only that module in scope its Gauss-Newton block is the loss Hessian: the solve is exact
    g = torch.Generator().manual_seed(4)
    if case == "layernorm":
        X = torch.randn(60, 5, generator=g, dtype=torch.float64)
        model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3)).double()
        scope = ["1.weight", "1.bias"]
    else:
        X = torch.randint(0, 12, (60, 2), generator=g)
        model, scope = _Embed().double(), ["emb.weight"]
    y = torch.randint(0, 3, (60,), generator=g)
    obj = ik.Objective(model, "cross_entropy", (X, y), params=scope, l2=0.01)
    solver = ik.make_solver(name, damping=0.02).fit(obj)
    assert solver.kinds == ["exact"] and solver.blocks[0].kind == "generic"
    V = obj.grads(*obj.train.take(slice(0, 4)))
    torch.testing.assert_close(solver.solve(V), _exact(obj, V, 0.02), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("opts", [{}, {"exact_block": 0}, {"exact_block": 0, "row_bases": 0}],
                         ids=["exact-and-rows", "rows", "diagonal"])
def test_the_fit_does_not_depend_on_the_capture_batch_size(opts):
    # every statistic is a sum over examples: batches of 37 and of 300 give the same solver
    obj, (Xte, yte) = digits_mlp(hidden=16)  # 64 -> 16 (1,040 params), 16 -> 10 (170)
    V = obj.grads(Xte[:4].double(), yte[:4])
    a = ik.make_solver("ekfac", damping=0.01, batch_size=37, **opts).fit(obj).solve(V)
    b = ik.make_solver("ekfac", damping=0.01, batch_size=300, **opts).fit(obj).solve(V)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_ekfac_handles_an_mlp_with_layernorm_close_to_exact_influence():
    # before generic blocks K-FAC/EK-FAC refused this network; now the norm layers are exact blocks
    from influencekit.experiments import datasets
    from influencekit.experiments.models import train

    Xtr, ytr, Xte, yte = datasets.digits()
    Xtr, ytr = Xtr[:300].double(), ytr[:300]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 10)).double()
    model = train(model, "cross_entropy", Xtr, ytr, l2=1e-3, epochs=20, lr=1e-2).eval()
    kw = dict(l2=1e-3, damping=0.05)  # Adam stops short of a minimum: the Hessian needs this damping
    test = (Xte[:10].double(), yte[:10])
    ref = ik.Influence(model, "cross_entropy", (Xtr, ytr), solver="exact", **kw).up_loss(test)
    inf = ik.Influence(model, "cross_entropy", (Xtr, ytr), solver="ekfac", **kw)
    got = inf.up_loss(test)
    assert inf.solver.kinds == ["rows", "exact", "exact"] and inf.solver.blocks[1].kind == "generic"
    assert torch.corrcoef(torch.stack([got.flatten(), ref.flatten()]))[0, 1] > 0.95


class _Bag(nn.Module):  # token embeddings summed over positions, then a tanh layer and a head
    def __init__(self, vocab=9, dim=3, onehot=False):
        super().__init__()
        self.emb = nn.Linear(vocab, dim, bias=False) if onehot else nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x).sum(1)))


def _bag_problem():
    g = torch.Generator().manual_seed(6)
    X = torch.randint(0, 9, (80, 4), generator=g)  # 4 positions, repeats within an example included
    X[:, 3] = X[:, 0]
    y = torch.randint(0, 3, (80,), generator=g)
    emb = _Bag().double()
    lin = _Bag(onehot=True).double()
    with torch.no_grad():
        lin.emb.weight.copy_(emb.emb.weight.T)
        lin.head.load_state_dict(emb.head.state_dict())
    onehot = nn.functional.one_hot(X, 9).double()
    return (emb, X), (lin, onehot), y


def test_an_embedding_is_factorised_as_the_linear_layer_on_one_hot_inputs():
    # K-FAC on nn.Embedding (A = diag(token counts) / n from indices) equals K-FAC on the same
    # map written as nn.Linear on one-hot rows, block by block (weights transposed)
    (emb, X), (lin, onehot), y = _bag_problem()
    objs = [ik.Objective(m, "cross_entropy", (x, y), l2=1e-3) for m, x in ((emb, X), (lin, onehot))]
    solvers = [ik.make_solver("kfac", damping=0.01, exact_block=0).fit(o) for o in objs]
    assert solvers[0].blocks[0].kind == "embedding" and solvers[0].kinds == ["kronecker", "kronecker"]
    torch.testing.assert_close(ik.capture.LayerCapture(objs[0]).gradients(X, y), objs[0].grads(X, y),
                               rtol=0, atol=1e-13)
    G = objs[0].grads(X[:5], y[:5])  # emb.weight [9, 3] row-major, then the head
    Gl = torch.cat([G[:, :27].reshape(5, 9, 3).transpose(1, 2).reshape(5, 27), G[:, 27:]], 1)
    torch.testing.assert_close(Gl, objs[1].grads(onehot[:5], y[:5]), rtol=1e-12, atol=1e-14)
    Xe, Xl = solvers[0].solve(G), solvers[1].solve(Gl)
    torch.testing.assert_close(torch.cat([Xe[:, :27].reshape(5, 9, 3).transpose(1, 2).reshape(5, 27), Xe[:, 27:]], 1),
                               Xl, rtol=1e-9, atol=1e-12)


def test_ekfac_embedding_eigenvalues_are_the_squared_rotated_token_gradients():
    from influencekit.solvers.kfac import _embedding_squares

    (emb, X), _, y = _bag_problem()
    obj = ik.Objective(emb, "cross_entropy", (X, y), l2=1e-3)
    s = ik.make_solver("ekfac", damping=0.01, exact_block=0).fit(obj)
    (a, g), _ = ik.capture.LayerCapture(obj).capture(X, y, "ggn")
    QS = s.factors[0]["QS"]
    G = torch.einsum("brto,btv->brov", g, nn.functional.one_hot(a, 9).double())  # per-example blocks [B, R, 3, 9]
    ref = ((QS.T @ G) ** 2).sum((0, 1)) / obj.n
    torch.testing.assert_close(s.factors[0]["eigenvalues"], ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(_embedding_squares(g @ QS, a, 9), ref * obj.n, rtol=1e-10, atol=1e-13)


def test_an_embedding_padding_row_gets_no_gradient_and_no_curvature():
    (emb, X), _, y = _bag_problem()
    emb.emb.padding_idx = 0
    obj = ik.Objective(emb, "cross_entropy", (X, y), l2=1e-3)
    G = obj.grads(X, y)
    assert G[:, :3].abs().max() == 0 and (X == 0).any()  # emb.weight row 0 = the padding row
    torch.testing.assert_close(ik.capture.LayerCapture(obj).gradients(X, y), G, rtol=0, atol=1e-13)
    for name in ("kfac", "ekfac"):
        s = ik.make_solver(name, damping=0.01, exact_block=0).fit(obj)
        assert s.factors[0]["eigenvalues"][:, 0].abs().max() == 0  # column 0 of [d, V]: the padding token


def test_an_embedding_with_max_norm_is_refused():
    m = _Bag()
    m.emb = nn.Embedding(9, 3, max_norm=1.0)
    X, y = torch.randint(0, 9, (10, 4)), torch.randint(0, 3, (10,))
    with pytest.raises(ik.UnsupportedLayerError, match="max_norm"):
        ik.make_solver("ekfac").fit(ik.Objective(m.double(), "cross_entropy", (X, y)))


@pytest.mark.parametrize("exact_block", [1024, 0])  # adapters kept as exact blocks, or all factorised
def test_lora_adapters_get_influence_close_to_exact(exact_block):
    obj, (Xte, yte) = digits_lora()
    # B A is unchanged by A -> M A, B -> B M^-1, so H is nearly singular along those directions: damp
    kw = dict(l2=1e-3, damping=0.01)
    train, test = (obj.train.x, obj.train.y), (Xte[:10], yte[:10])
    ref = ik.Influence(obj.model, "cross_entropy", train, solver="exact", **kw).up_loss(test)
    for name in ("kfac", "ekfac", "pcg"):
        inf = ik.Influence(obj.model, "cross_entropy", train, solver=name, exact_block=exact_block, **kw)
        got = inf.up_loss(test)
        assert torch.corrcoef(torch.stack([got.flatten(), ref.flatten()]))[0, 1] > 0.99, name
