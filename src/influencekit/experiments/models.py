"""Small reference models used by the problems, benchmarks and tests.

Smooth activations (tanh) and strided convolutions instead of max-pooling keep the loss twice
differentiable, which is what the influence approximation assumes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LogisticRegression(nn.Module):
    """One logit f(x) = w^T x + b (b = 0 with ``bias=False``) for binary labels: [B, d] -> [B]."""

    def __init__(self, d: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(d, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.reshape(x.shape[0], -1)).squeeze(-1)


class MLP(nn.Module):
    """d -> hidden (tanh) -> ... -> classes: [B, d] -> [B, classes]."""

    def __init__(self, d: int, hidden: tuple[int, ...] = (64,), classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Tanh()]
            d = h
        self.features = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """MNIST-sized CNN: [B, 1, 28, 28] -> [B, classes]; 11,978 parameters for 10 classes.

    conv 1->8 (5x5, stride 2) tanh -> conv 8->16 (5x5, stride 2) tanh -> linear 256->32 tanh
    (``features``: the 32-d penultimate embedding) -> linear 32->classes (``head``).
    """

    def __init__(self, classes: int = 10, channels: tuple[int, int] = (8, 16), hidden: int = 32):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, stride=2), nn.Tanh(),
            nn.Conv2d(c1, c2, 5, stride=2), nn.Tanh(),
            nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.Tanh(),
        )
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class LoRALinear(nn.Module):
    """A low-rank adapter on a linear layer (which it freezes), laid out as PEFT's ``lora.Linear`` (so what the
    tests and benchmarks check is the module structure PEFT produces): ``base_layer(x) + scaling *
    lora_B(lora_A(dropout(x)))`` with ``lora_A`` [d_in -> r] and ``lora_B`` [r -> d_out] ``nn.Linear``
    layers in ``ModuleDict``s keyed by adapter name, B zero-initialised (the adapted model starts as
    the base), scaling = alpha / r. [B, d_in] -> [B, d_out].

    Influence over the adapters only is the default scope (the base does not require grad); K-FAC /
    EK-FAC treat A and B as two linear layers. B A is unchanged by A -> M A, B -> B M^-1, so the
    Hessian is nearly singular along those directions: pass a damping."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 adapter: str = "default"):
        super().__init__()
        self.base_layer = base.requires_grad_(False)
        kw = dict(bias=False, dtype=base.weight.dtype, device=base.weight.device)
        self.lora_A = nn.ModuleDict({adapter: nn.Linear(base.in_features, r, **kw)})
        self.lora_B = nn.ModuleDict({adapter: nn.Linear(r, base.out_features, **kw)})
        nn.init.zeros_(self.lora_B[adapter].weight)
        self.lora_dropout = nn.ModuleDict({adapter: nn.Dropout(dropout)})
        self.scaling, self.adapter = alpha / r, adapter

    def forward(self, x: Tensor) -> Tensor:
        k = self.adapter
        return self.base_layer(x) + self.scaling * self.lora_B[k](self.lora_A[k](self.lora_dropout[k](x)))


def train(model: nn.Module, loss, X: Tensor, y: Tensor, *, l2: float = 0.0, epochs: int = 10,
          batch_size: int = 128, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    """Mini-batch Adam on (1/n) sum L + (l2/2)||theta||^2 (the objective influence assumes).
    Returns the model in eval mode. Follow with ``influencekit.minimize`` to reach a stationary
    point when influence is to be compared with retraining."""
    from ..losses import get_loss

    loss_fn = get_loss(loss)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            out = loss_fn(model(X[idx]), y[idx]).mean()
            if l2:
                out = out + 0.5 * l2 * sum((p * p).sum() for p in model.parameters())
            out.backward()
            opt.step()
    return model.eval()
