"""scoring.py: the per-layer factorised score matrix equals the per-example-gradient one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from influencekit import InputError, Objective, UnsupportedLayerError
from influencekit.influence import scores
from influencekit.scoring import LayerScorer, embedding_block, layer_block, layer_scores

F64 = torch.float64


def _objective(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, **kw) -> Objective:
    return Objective(model.eval(), "cross_entropy", (X, Y), batch_size=7, **kw)


def test_linear_scores_equal_closed_form_softmax_gradient():
    """For a linear softmax model grad_W L = (softmax(Wx + b) - e_y) x^T, grad_b L = softmax - e_y."""
    lin = nn.Linear(5, 3).double()
    X, Y = torch.randn(20, 5, dtype=F64), torch.randint(0, 3, (20,))
    obj = _objective(lin, X, Y)
    S = torch.randn(4, obj.p, dtype=F64)
    r = torch.softmax(lin(X), 1) - nn.functional.one_hot(Y, 3).double()  # [n, 3]
    G = torch.cat([(r[:, :, None] * X[:, None, :]).reshape(20, -1), r], 1)  # [n, p] in (weight, bias) order
    torch.testing.assert_close(layer_scores(obj, S), S @ G.detach().T, rtol=1e-12, atol=1e-12)


class ConvNet(nn.Module):
    """Conv with padding, stride and dilation, a bias-free conv, and a Linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
        self.c2 = nn.Conv2d(3, 4, 3, stride=2, bias=False)
        self.head = nn.Linear(4 * 2 * 5, 5)

    def forward(self, x):
        h = torch.tanh(self.c2(torch.tanh(self.c1(x))))
        return self.head(h.flatten(1))


def test_conv2d_scores_equal_vmap_per_example_gradients_float64():
    X, Y = torch.randn(15, 2, 9, 9, dtype=F64), torch.randint(0, 5, (15,))
    obj = _objective(ConvNet().double(), X, Y)
    S = torch.randn(6, obj.p, dtype=F64)
    ref = scores(obj, S, method="grad")
    torch.testing.assert_close(layer_scores(obj, S), ref, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(scores(obj, S, method="layers"), ref, rtol=1e-11, atol=1e-11)
    # one query vector takes the other contraction order; same numbers
    torch.testing.assert_close(layer_scores(obj, S[:1]), ref[:1], rtol=1e-11, atol=1e-11)


def test_small_cnn_scores_equal_grad_path():
    from influencekit.experiments.models import SmallCNN

    X, Y = torch.randn(9, 1, 28, 28, dtype=F64), torch.randint(0, 10, (9,))
    obj = _objective(SmallCNN().double(), X, Y)
    S = torch.randn(3, obj.p, dtype=F64)
    torch.testing.assert_close(layer_scores(obj, S), scores(obj, S, method="grad"), rtol=1e-11, atol=1e-11)


class Mixed(nn.Module):
    """A LayerNorm (generic path) and a Linear block applied twice (reused module)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.block = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.norm(self.inp(x)))
        h = torch.tanh(self.block(torch.tanh(self.block(h))))
        return self.out(h)


def test_generic_parameters_and_reused_modules_are_scored_exactly():
    X, Y = torch.randn(12, 4, dtype=F64), torch.randint(0, 3, (12,))
    obj = _objective(Mixed().double(), X, Y)
    S = torch.randn(5, obj.p, dtype=F64)
    scorer = LayerScorer(obj, S)
    assert scorer.generic_names == ["norm.weight", "norm.bias"]
    torch.testing.assert_close(layer_scores(obj, S), scores(obj, S, method="grad"), rtol=1e-11, atol=1e-11)


def test_parameter_subset_in_scope():
    """A weight in scope without its bias: the bias block is neither scored nor expected in S."""
    X, Y = torch.randn(12, 4, dtype=F64), torch.randint(0, 3, (12,))
    obj = _objective(Mixed().double(), X, Y, params=["block.weight", "out.bias", "norm.bias"])
    S = torch.randn(2, obj.p, dtype=F64)
    torch.testing.assert_close(layer_scores(obj, S), scores(obj, S, method="grad"), rtol=1e-11, atol=1e-11)


def test_layer_block_orders_agree():
    """Contracting S with the activations and forming the layer gradient first give one number."""
    A, G = torch.randn(3, 5, 4, dtype=F64), torch.randn(3, 5, 2, dtype=F64)
    Sw, Sb = torch.randn(7, 2, 4, dtype=F64), torch.randn(7, 2, dtype=F64)
    direct = torch.einsum("bti,koi,bto->bk", A, Sw, G) + G.sum(1) @ Sb.T
    torch.testing.assert_close(layer_block(A, G, Sw, Sb), direct)  # k*T > T + k: materialises
    torch.testing.assert_close(layer_block(A, G, Sw[:1], Sb[:1]), direct[:, :1])  # k = 1: contracts


def test_float32_by_default_and_float64_on_request():
    model = ConvNet()
    X, Y = torch.randn(10, 2, 9, 9), torch.randint(0, 5, (10,))
    obj = _objective(model, X, Y)
    S = torch.randn(3, obj.p)
    fast = layer_scores(obj, S)
    exact = layer_scores(obj, S, dtype=F64)
    assert fast.dtype == torch.float32 and exact.dtype == F64
    obj64 = _objective(ConvNet().double(), X.double(), Y)
    obj64.theta = obj.theta.double()
    torch.testing.assert_close(exact, scores(obj64, S.double(), method="grad"), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast.double(), exact, rtol=1e-4, atol=1e-4)


def test_scores_other_data_and_rejects_bad_queries():
    X, Y = torch.randn(8, 4, dtype=F64), torch.randint(0, 3, (8,))
    obj = _objective(Mixed().double(), X, Y)
    S = torch.randn(2, obj.p, dtype=F64)
    Xo, Yo = torch.randn(5, 4, dtype=F64), torch.randint(0, 3, (5,))
    torch.testing.assert_close(layer_scores(obj, S, (Xo, Yo)), scores(obj, S, (Xo, Yo), method="grad"))
    with pytest.raises(InputError, match="query vectors must be"):
        layer_scores(obj, torch.randn(2, obj.p + 1, dtype=F64))


class Gain(nn.Module):
    """A custom module with its own parameters (no structure the capture knows): x * gain + shift."""

    def __init__(self, d: int):
        super().__init__()
        self.gain, self.shift = nn.Parameter(1 + 0.1 * torch.randn(d)), nn.Parameter(0.1 * torch.randn(d))

    def forward(self, x):
        return x * self.gain + self.shift


class Zoo(nn.Module):
    """Every kind of block the one capture has: an embedding, a convolution, a grouped convolution
    and a LayerNorm and a custom module (generic blocks), a LoRA adapter on a frozen Linear, an
    output Linear whose weight is tied to the embedding's, and a parameter of the root module.
    Tokens [B, 5] from a vocabulary of 11 -> 11 logits."""

    def __init__(self):
        from influencekit.experiments.models import LoRALinear

        super().__init__()
        self.emb = nn.Embedding(11, 4, padding_idx=0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.grouped = nn.Conv2d(2, 2, 3, groups=2)
        self.norm = nn.LayerNorm(12)
        self.gain = Gain(12)
        self.lora = LoRALinear(nn.Linear(12, 4), r=2, alpha=4.0)
        nn.init.normal_(self.lora.lora_B["default"].weight)  # B != 0: the adapter's A gets a gradient
        self.out = nn.Linear(4, 11, bias=False)
        self.out.weight = self.emb.weight  # tied: one parameter, two modules
        self.temperature = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        h = torch.tanh(self.conv(self.emb(x).unsqueeze(1)))  # [B, 2, 5, 4]
        h = torch.tanh(self.grouped(h)).flatten(1)  # [B, 2 * 3 * 2]
        h = torch.tanh(self.lora(self.gain(self.norm(h))))
        return self.out(h) * self.temperature


def test_every_supported_layer_type_is_scored_exactly_by_the_one_capture():
    """scorer(x, y) = S @ grad L(z_b) for a model with every block kind the capture has: no
    per-example gradient is formed, and the numbers are those of vmap's gradients."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randint(0, 11, (13, 5), generator=g), torch.randint(0, 11, (13,), generator=g)
    obj = _objective(Zoo().double(), X, Y)
    assert "lora.base_layer.weight" not in obj.names and "out.weight" not in obj.names  # frozen; tied
    S = torch.randn(6, obj.p, dtype=F64)
    scorer = LayerScorer(obj, S)
    assert {(b.name, b.kind) for b in scorer.blocks} == {
        ("", "generic"), ("emb", "embedding"), ("conv", "conv2d"), ("grouped", "generic"), ("norm", "generic"),
        ("gain", "generic"), ("lora.lora_A.default", "linear"), ("lora.lora_B.default", "linear"),
        ("out", "linear")}
    want = S @ obj.grads(X, Y).T
    torch.testing.assert_close(scorer(X, Y), want, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(layer_scores(obj, S[:1]), want[:1], rtol=1e-11, atol=1e-12)  # the other order
    torch.testing.assert_close(scores(obj, S, method="layers"), want, rtol=1e-11, atol=1e-12)


def test_embedding_block_gathers_the_query_column_of_every_token():
    tokens = torch.tensor([[1, 2, 1], [0, 3, 3]])
    G, E = torch.randn(2, 3, 5, dtype=F64), torch.randn(4, 6, 5, dtype=F64)  # E: k queries of a [V, d] weight
    onehot = nn.functional.one_hot(tokens, 6).double()  # [B, T, V]: the embedding is linear in one-hot rows
    direct = torch.einsum("btd,kvd,btv->bk", G, E, onehot)
    torch.testing.assert_close(embedding_block(tokens, G, E), direct)


def test_a_module_the_capture_cannot_replay_names_the_other_scoring_methods():
    class TwoOut(nn.Module):  # its own parameter, and a tuple out: no single output gradient to capture
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return x @ self.w, x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair, self.head = TwoOut(), nn.Linear(3, 3)

        def forward(self, x):
            return self.head(self.pair(x)[0])

    X, Y = torch.randn(6, 4, dtype=F64), torch.randint(0, 3, (6,))
    obj = _objective(Net().double(), X, Y)
    S = torch.randn(2, obj.p, dtype=F64)
    with pytest.raises(UnsupportedLayerError, match=r"pair returns tuple.*method='grad' or 'jvp'"):
        layer_scores(obj, S)
    head = _objective(Net().double(), X, Y, params=["head.weight", "head.bias"])  # out of scope: fine
    torch.testing.assert_close(layer_scores(head, S[:, :12]), S[:, :12] @ head.grads(X, Y).T)
