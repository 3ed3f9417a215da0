"""Layer discovery and capture: per-layer inputs a and output gradients g reproduce the
per-example gradients exactly (G_b = sum_t g_bt a_bt^T), and the GGN pseudo-gradients
reproduce the Gauss-Newton matrix."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import influencekit as ik
from helpers import digits_lora
from influencekit.capture import LayerCapture, find_layers, patches


def _data(shape, n=12, classes=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


class ConvNet(nn.Module):  # padding, stride, dilation and a conv without bias
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.c2 = nn.Conv2d(3, 4, 2, dilation=2, bias=False)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        h = torch.tanh(self.c2(torch.tanh(self.c1(x))))
        return self.fc(h.flatten(1))


def test_linear_layer_captures_reproduce_per_example_gradients():
    X, y = _data((5,))
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    obj = ik.Objective(model, "cross_entropy", (X, y))
    torch.testing.assert_close(LayerCapture(obj).gradients(X, y), obj.grads(X, y), rtol=0, atol=1e-13)


def test_conv_layer_captures_reproduce_per_example_gradients_via_im2col():
    X, y = _data((2, 7, 7))
    obj = ik.Objective(ConvNet().double(), "cross_entropy", (X, y))
    blocks = find_layers(obj)
    assert [(b.name, b.kind, b.d_out, b.d_in, b.cols) for b in blocks] == [
        ("c1", "conv2d", 3, 18, 19), ("c2", "conv2d", 4, 12, 12), ("fc", "linear", 3, 16, 17)]
    torch.testing.assert_close(LayerCapture(obj).gradients(X, y), obj.grads(X, y), rtol=0, atol=1e-13)


def test_a_subset_of_parameters_maps_to_the_right_slices_of_theta():
    X, y = _data((2, 7, 7))
    obj = ik.Objective(ConvNet().double(), "cross_entropy", (X, y), params=["fc.weight", "c1.bias"])
    blocks = find_layers(obj)
    assert [(b.name, b.cols) for b in blocks] == [("c1", 1), ("fc", 16)]
    torch.testing.assert_close(LayerCapture(obj).gradients(X, y), obj.grads(X, y), rtol=0, atol=1e-13)


def test_ggn_pseudo_gradients_reproduce_the_hessian_of_a_linear_softmax_model():
    # logits linear in theta and cross-entropy convex in the logits: GGN = Hessian exactly
    X, y = _data((4,), n=30)
    obj = ik.Objective(nn.Linear(4, 3).double(), "cross_entropy", (X, y), l2=0.1)
    cap = LayerCapture(obj)
    (a, g), = cap.capture(X, y, "ggn")
    G = cap.per_example(a, g).reshape(30, 3, -1)  # [n, R, 15]: rows of [W | b]
    ggn = torch.einsum("brp,brq->pq", G, G) / 30
    # the block's [W | b] layout (3 rows of 5) -> theta's order [W.flatten(), b]
    order = torch.cat([torch.arange(15).reshape(3, 5)[:, :4].flatten(), torch.arange(15).reshape(3, 5)[:, 4]])
    ggn = ggn[order][:, order]
    torch.testing.assert_close(ggn + 0.1 * torch.eye(15, dtype=torch.float64), obj.hessian(), rtol=0, atol=1e-12)


def test_capturing_only_some_layers_gives_their_entries_of_the_full_capture():
    g = torch.Generator().manual_seed(7)
    X, y = torch.randint(0, 7, (20, 3), generator=g), torch.randint(0, 3, (20,), generator=g)
    cap = LayerCapture(ik.Objective(_Pair().double(), "cross_entropy", (X, y)), generic=100)
    full = cap.capture(X, y, "ggn")
    part = cap.capture(X, y, "ggn", only=[3, 1])
    assert len(part) == 2  # blocks 1 (ln, generic) and 3 (head, linear), in increasing order
    torch.testing.assert_close(part[0][1], full[1][1], rtol=0, atol=0)
    torch.testing.assert_close(part[1], full[3], rtol=0, atol=0)


def test_the_users_model_is_not_modified():
    X, y = _data((5,))
    model = nn.Sequential(nn.Linear(5, 3)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    LayerCapture(ik.Objective(model, "cross_entropy", (X, y))).capture(X, y, "ggn")
    assert not model[0]._forward_hooks and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unsupported_layer_in_scope_names_it_and_the_solvers_to_use():
    X, y = _data((5,))
    model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3)).double()
    with pytest.raises(ik.UnsupportedLayerError, match=r"1 \(LayerNorm\).*solver='cg' or 'exact'"):
        find_layers(ik.Objective(model, "cross_entropy", (X, y)))
    # leaving the norm layer out of scope is the other fix
    obj = ik.Objective(model, "cross_entropy", (X, y), params=["0.weight", "0.bias", "2.weight", "2.bias"])
    assert [b.name for b in find_layers(obj)] == ["0", "2"]


class _Pair(nn.Module):  # a layer of two inputs, a LayerNorm and an embedding around supported layers
    def __init__(self):
        super().__init__()
        self.emb, self.ln = nn.Embedding(7, 4), nn.LayerNorm(4)
        self.bil, self.head = nn.Bilinear(4, 4, 4), nn.Linear(4, 3)

    def forward(self, x):
        e = self.ln(self.emb(x).sum(1))
        return self.head(torch.tanh(self.bil(e, e)))


def test_small_layers_of_other_types_are_generic_blocks_with_exact_per_example_gradients():
    g = torch.Generator().manual_seed(5)
    X, y = torch.randint(0, 7, (30, 3), generator=g), torch.randint(0, 3, (30,), generator=g)
    obj = ik.Objective(_Pair().double(), "cross_entropy", (X, y))
    blocks = find_layers(obj, generic=100)
    assert [(b.name, b.kind, b.cols) for b in blocks] == [("emb", "generic", 28), ("ln", "generic", 8),
                                                           ("bil", "generic", 68), ("head", "linear", 5)]
    torch.testing.assert_close(LayerCapture(obj, generic=100).gradients(X, y), obj.grads(X, y), rtol=0, atol=1e-13)
    with pytest.raises(ik.UnsupportedLayerError, match=r"bil \(Bilinear\).*68 parameters.*exact_block = 50"):
        find_layers(obj, generic=50)


def test_a_layer_called_with_keyword_arguments_is_refused_rather_than_replayed_wrongly():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.head = nn.LayerNorm(5), nn.Linear(5, 3)

        def forward(self, x):
            return self.head(self.ln(input=x))

    X, y = _data((5,))
    obj = ik.Objective(Scaled().double(), "cross_entropy", (X, y))
    with pytest.raises(ik.UnsupportedLayerError, match=r"ln is called with keyword arguments \['input'\]"):
        LayerCapture(obj, generic=100).capture(X, y, "ggn")


def test_batch_norm_in_eval_mode_is_a_generic_block():
    X, y = _data((5,))
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    model[1].running_mean.uniform_(-1, 1)  # non-trivial statistics: the block uses the module's buffers
    obj = ik.Objective(model.eval(), "cross_entropy", (X, y))
    assert [b.kind for b in find_layers(obj, generic=100)] == ["linear", "generic", "linear"]
    torch.testing.assert_close(LayerCapture(obj, generic=100).gradients(X, y), obj.grads(X, y), rtol=0, atol=1e-13)


def test_tied_weights_are_refused():
    X, y = _data((4,))
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)).double()
    model[2].weight = model[0].weight
    with pytest.raises(ik.UnsupportedLayerError, match="shared"):
        find_layers(ik.Objective(model, "mse", (X, torch.randn(12, 4, dtype=torch.float64))))


@pytest.mark.parametrize("conv", [
    nn.Conv2d(2, 3, 3, padding=1, stride=2),
    nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    nn.Conv2d(2, 3, 2, padding="valid", dilation=2),
])
def test_conv_patches_are_im2col_in_the_order_of_the_flattened_weight(conv):
    x = torch.randn(4, 2, 9, 8, dtype=torch.float64)
    pad = (0, 0) if conv.padding == "valid" else conv.padding
    ref = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=pad, stride=conv.stride).transpose(1, 2)
    assert torch.equal(patches(conv, x), ref)


def test_lora_adapters_on_a_frozen_base_are_linear_blocks_with_exact_per_example_gradients():
    obj, _ = digits_lora()
    # the default scope is what trains: both adapters' A and B and the head, never the frozen base
    assert obj.names == ["0.lora_A.default.weight", "0.lora_B.default.weight", "2.lora_A.default.weight",
                         "2.lora_B.default.weight", "4.weight", "4.bias"]
    assert [(b.name, b.kind) for b in find_layers(obj)] == [
        ("0.lora_A.default", "linear"), ("0.lora_B.default", "linear"), ("2.lora_A.default", "linear"),
        ("2.lora_B.default", "linear"), ("4", "linear")]
    X, y = obj.train.x[:20], obj.train.y[:20]
    torch.testing.assert_close(LayerCapture(obj).gradients(X, y), obj.grads(X, y), rtol=0, atol=1e-13)


def test_ggn_pseudo_gradients_give_the_gauss_newton_matrix_of_a_conv_net():
    from torch.func import functional_call, jacrev, vmap

    X, y = _data((2, 7, 7))
    obj = ik.Objective(ConvNet().double(), "cross_entropy", (X, y))
    Z = LayerCapture(obj).pseudo_gradients(X, y, "ggn")  # [n, R, p]

    def logits(theta, x):
        return functional_call(obj.model, obj.unflatten(theta), (x[None],))[0]

    J = vmap(jacrev(logits), in_dims=(None, 0))(obj.theta, X)  # [n, C, p]
    prob = torch.softmax(obj.model(X), 1).detach()
    H_out = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]  # cross-entropy's Hessian in the logits
    ggn = torch.einsum("bcp,bcd,bdq->pq", J, H_out, J) / len(X)
    torch.testing.assert_close(torch.einsum("brp,brq->pq", Z, Z) / len(X), ggn, rtol=0, atol=1e-12)
