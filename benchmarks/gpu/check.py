"""The CUDA path, checked and timed on one GPU (never needed by the tests, which run on CPU).

    python benchmarks/gpu/check.py --data-dir DIR [--out copy.json]

Records both parts in benchmarks/gpu/check.json (keys ``convex_float64``, ``cnn_float32``); ``--out``
also writes them to one more file (e.g. the device machine's output folder).

1. Correctness on the GPU, float64, logistic regression on MNIST 1-vs-7 (n = 13,007, p = 785):
   exact / CG / LiSSA / EK-FAC-preconditioned CG s_test and the [m x n] I_up,loss matrix on CUDA
   against the same computation on the CPU (relative errors), and CG / LiSSA against exact.
2. SmallCNN (11,978 params) on full MNIST (n = 60,000), 100 test points, float32 on the GPU:
   seconds and peak GPU memory of one plain training epoch (forward + backward), of EK-FAC
   curvature + s_test, of PCG s_test, and of scoring the [100 x 60,000] matrix by per-layer
   factorised contractions (``layers``) and by vmap per-example gradients (``grad``).

Signs: ``influencekit.convention``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from influencekit import Influence, Objective, make_solver, spectrum
from influencekit.experiments.datasets import mnist
from influencekit.experiments.models import SmallCNN, train
from influencekit.experiments.problems import make
from influencekit.influence import scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


DEV = torch.device("cuda")


def timed(fn):
    """(fn(), seconds), the device synchronised before and after (CUDA kernels run asynchronously)."""
    sync = torch.cuda.synchronize if DEV.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def peak_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if DEV.type == "cuda" else float("nan")


def reset_peak() -> None:
    if DEV.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def convex(data_dir: str | None, lissa_depth: int) -> dict:
    w = make("mnist-logreg", data_dir=data_dir)
    test = (w.test[0][:20], w.test[1][:20])
    out: dict = {"n": len(w.train[1]), "p": 785}
    ref = {}
    for solver, opts in (("exact", {}), ("cg", {"tol": 1e-10}), ("lissa", {"depth": lissa_depth, "repeats": 4}),
                         ("pcg", {"tol": 1e-10})):
        res = {}
        # LiSSA is stochastic (its sampled batches differ by device): compared with exact only
        for dev in ("cpu", DEV.type) if solver != "lissa" else (DEV.type,):
            inf = Influence(w.model.to(dev), w.loss, w.train, l2=w.l2, solver=solver, damping=w.damping,
                            device=dev, **opts)
            (S, up), secs = timed(lambda inf=inf: (inf.s_test(test), inf.up_loss(test)))
            res[dev] = (S.cpu(), up.cpu(), secs)
        if solver == "exact":
            ref["exact"] = res["cpu"][1]
        gpu = res[DEV.type]
        out[solver] = {"up_loss_rel_gpu_vs_exact_cpu": rel(gpu[1], ref["exact"]), "seconds_gpu": gpu[2]}
        if "cpu" in res:
            out[solver].update(s_test_rel_gpu_vs_cpu=rel(gpu[0], res["cpu"][0]),
                               up_loss_rel_gpu_vs_cpu=rel(gpu[1], res["cpu"][1]), seconds_cpu=res["cpu"][2])
        print(solver, out[solver], flush=True)
    w.model.cpu()
    return out


def cnn(data_dir: str | None, epochs: int, n_train: int | None) -> dict:
    dev = DEV
    Xtr, ytr, Xte, yte = mnist(data_dir, dtype=torch.float32)
    Xtr, ytr = Xtr[:n_train], ytr[:n_train]
    Xtr, ytr = Xtr.to(dev), ytr.to(dev)
    torch.manual_seed(0)
    model, train_s = timed(lambda: train(SmallCNN().to(dev), "cross_entropy", Xtr, ytr, l2=1e-4, epochs=epochs,
                                         batch_size=128, lr=3e-3, seed=0))
    test = (Xte[:100].to(dev), yte[:100].to(dev))
    acc = (model(Xte.to(dev)).argmax(1) == yte.to(dev)).float().mean().item()
    out: dict = {"n": len(ytr), "train_seconds": train_s, "epochs": epochs, "test_accuracy": acc}

    def epoch():
        m = SmallCNN().to(dev)
        m.load_state_dict(model.state_dict())
        for i in range(0, len(ytr), 512):
            m.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(Xtr[i:i + 512]), ytr[i:i + 512]).backward()

    epoch()  # warm-up (kernels, allocator)
    _, out["epoch_seconds"] = timed(epoch)
    obj = Objective(model, "cross_entropy", (Xtr, ytr), l2=1e-4, batch_size=512)
    G = obj.grads(*test)
    # a network after 2 epochs is not at a minimum: damp by twice the Lanczos suggestion on a sample
    sample = torch.randperm(obj.n, generator=torch.Generator().manual_seed(0))[:5000]
    sp, out["spectrum_seconds"] = timed(lambda: spectrum(Objective(model, "cross_entropy", obj.train.take(sample),
                                                                   l2=1e-4, batch_size=1000), steps=20))
    d = out["damping"] = max(0.01, 2 * sp.suggested_damping)
    for name, opts in (("ekfac", {"damping": d}), ("pcg", {"damping": d, "tol": 1e-4, "max_iter": 50})):
        reset_peak()
        solver = make_solver(name, **opts)
        _, fit_s = timed(lambda solver=solver: solver.fit(obj))
        S, solve_s = timed(lambda solver=solver: solver.solve(G))
        out[name] = {"fit_seconds": fit_s, "solve_seconds": solve_s,
                     "peak_gpu_mb": peak_mb()}
        print(name, out[name], flush=True)
    S = S.float()
    base = {}
    for method in ("layers", "grad", "layers"):  # layers twice: the first call pays one-off compilation
        reset_peak()
        before = torch.cuda.memory_allocated() if DEV.type == "cuda" else 0
        up, secs = timed(lambda method=method: -scores(obj, S, method=method))
        base[method] = up
        out[f"score_{method}"] = {"seconds": secs, "ratio_to_epoch": secs / out["epoch_seconds"],
                                  "peak_gpu_mb_beyond_inputs": peak_mb() - before / 2**20,
                                  "output_mb": up.numel() * 4 / 2**20}
    out["layers_vs_grad_max_abs_diff"] = (base["layers"] - base["grad"]).abs().max().item()
    out["max_abs_up_loss"] = base["grad"].abs().max().item()
    print("cnn", out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda", help="cpu only to dry-run this script")
    ap.add_argument("--n-train", type=int, default=None, help="CNN: first n MNIST training points (default all)")
    ap.add_argument("--lissa-depth", type=int, default=1000)
    ap.add_argument("--skip-convex", action="store_true")
    a = ap.parse_args()
    global DEV
    DEV = torch.device(a.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check runs only on a GPU machine.")
    R = {"device": torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", "torch": torch.__version__,
         "convention": "I_up,loss > 0 harmful, < 0 helpful; loo = -(1/n) I_up,loss"}
    if not a.skip_convex:
        R["convex_float64"] = convex(a.data_dir, a.lissa_depth)
        record(__file__, "convex_float64", R["convex_float64"])
    R["cnn_float32"] = cnn(a.data_dir, a.epochs, a.n_train)
    record(__file__, "cnn_float32", R["cnn_float32"])
    if a.out:
        with open(a.out, "w") as f:
            json.dump(R, f, indent=1)


if __name__ == "__main__":
    main()
