"""K-FAC / EK-FAC on layers beyond Linear/Conv2d: LayerNorm (a generic exact block) and nn.Embedding
(factorised with the diagonal token-count factor), against exact / converged-CG influence.

    OMP_NUM_THREADS=1 python benchmarks/curvature/layer_types.py

(a) digits, MLP 64-32-LN-tanh-32-LN-tanh-10 (3,594 parameters, two LayerNorms), Adam then 300 L-BFGS
steps, damping 0.05, reference: the exact solver. (b) a synthetic bag of words: 6 tokens of a
vocabulary of 300 per example, mean of their 8-dimensional embeddings (2,400 parameters, over
exact_block, so factorised), tanh, a 2-class head; reference: CG to relative residual 1e-10.
(c) LoRA: a digits MLP 64-128-tanh-128-tanh-10 trained on digits 0-4 and frozen, rank-8 adapters
(``models.LoRALinear``, PEFT's layout) on both hidden layers plus the head fine-tuned on all ten digits
(4,874 parameters in scope), damping 1e-3; reference: the exact solver; K-FAC/EK-FAC with their
default exact_block (adapters kept exact, head factorised) and with exact_block=0 (all factorised).
DataInf (one block per parameter tensor) runs on every case with the same damping.
Prints the Pearson correlation of I_up,loss [20 test points x n] with the reference and the seconds, and
records them in benchmarks/curvature/layer_types.json (keys ``layernorm``, ``embedding``, ``lora``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import influencekit as ik
from influencekit.experiments import datasets
from influencekit.experiments.models import LoRALinear, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

torch.set_num_threads(1)


def pearson(a, b):
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def compare(model, train_data, test, reference: dict, label: str, variants: tuple[dict, ...] = ({},), *,
            key: str, **kw) -> None:
    t = time.perf_counter()
    inf_ref = ik.Influence(model, "cross_entropy", train_data, **reference, **kw)
    ref = inf_ref.up_loss(test)
    rows = {"case": label, "p": inf_ref.p, "n": inf_ref.n, "reference": reference["solver"],
            "reference_seconds": time.perf_counter() - t, "options": {k: v for k, v in kw.items()}, "methods": []}
    print(f"{label}: reference {reference['solver']} {rows['reference_seconds']:.1f} s", flush=True)
    for options in variants:
        for name in ("kfac", "ekfac", "pcg", "datainf"):
            if name == "datainf" and options:  # no layer blocks: one run is enough
                continue
            t = time.perf_counter()
            inf = ik.Influence(model, "cross_entropy", train_data, solver=name, **options, **kw)
            got = inf.up_loss(test)
            secs = time.perf_counter() - t
            rows["methods"].append({"solver": name, "options": options, "pearson": pearson(got, ref), "seconds": secs})
            line = f"  {name:>7}{options or ''}: Pearson {pearson(got, ref):.4f}, {secs:.2f} s"
            fitted = getattr(inf.solver, "preconditioner_solver", inf.solver)
            if hasattr(fitted, "kinds"):
                line += "; blocks " + ", ".join(f"{b.name}:{b.kind}/{k}" for b, k in zip(fitted.blocks, fitted.kinds))
            print(line, flush=True)
    record(__file__, key, rows)


def polished(model: nn.Module, X, y, epochs: int) -> tuple[nn.Module, int]:
    """Adam for ``epochs`` (cross-entropy, l2 1e-3), then 300 L-BFGS steps towards a stationary point;
    returns the model in eval mode and its number of parameters in scope."""
    model = train(model, "cross_entropy", X, y, l2=1e-3, epochs=epochs, lr=1e-2)
    obj = ik.Objective(model, "cross_entropy", (X, y), l2=1e-3, batch_size=600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return obj.to_model(ik.minimize(obj, max_iter=300)).eval(), obj.p


def layernorm_mlp() -> None:
    Xtr, ytr, Xte, yte = datasets.digits()
    Xtr, ytr = Xtr[:600].double(), ytr[:600]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32), nn.Tanh(), nn.Linear(32, 32), nn.LayerNorm(32),
                          nn.Tanh(), nn.Linear(32, 10)).double()
    model, p = polished(model, Xtr, ytr, epochs=30)
    compare(model, (Xtr, ytr), (Xte[:20].double(), yte[:20]), {"solver": "exact"},
            f"(a) digits MLP with 2 LayerNorms, p = {p}", key="layernorm", l2=1e-3, damping=0.05)


class Bag(nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x).mean(1)))


def bag_of_words() -> None:
    g = torch.Generator().manual_seed(0)
    vocab, n = 300, 1500
    X = torch.randint(0, vocab, (n, 6), generator=g)
    y = (torch.randn(vocab, generator=g)[X].sum(1) > 0).long()
    torch.manual_seed(0)
    model = train(Bag(vocab, 8).double(), "cross_entropy", X, y, l2=1e-3, epochs=30, lr=1e-2).eval()
    compare(model, (X, y), (X[:20], y[:20]), {"solver": "cg", "tol": 1e-10, "max_iter": 3000},
            "(b) bag of words, embedding 300 x 8 + head, p = 2418", key="embedding", l2=1e-3, damping=0.01)


def lora() -> None:
    Xtr, ytr, Xte, yte = datasets.digits()
    Xtr, ytr = Xtr[:600].double(), ytr[:600]
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10)).double()
    base = train(base, "cross_entropy", Xtr[ytr < 5], ytr[ytr < 5], l2=1e-3, epochs=30, lr=1e-2)
    base.requires_grad_(False)
    base[0], base[2] = LoRALinear(base[0], r=8), LoRALinear(base[2], r=8)
    base[4].requires_grad_(True)
    model, p = polished(base, Xtr, ytr, epochs=40)
    compare(model, (Xtr, ytr), (Xte[:20].double(), yte[:20]), {"solver": "exact"},
            f"(c) LoRA r = 8 on a frozen digits MLP 64-128-128-10, adapters + head, p = {p}",
            variants=({}, {"exact_block": 0}), key="lora", l2=1e-3, damping=1e-3)


if __name__ == "__main__":
    layernorm_mlp()
    bag_of_words()
    lora()
