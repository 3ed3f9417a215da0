"""Mislabel detection on MNIST with a small network (issue 6): settings sweep.

    OMP_NUM_THREADS=1 python benchmarks/uses/mislabel_net_sweep.py [--n 3000] [--settings NAME ...]

For each recipe (model, epochs, L2, lr): flip 10% of the labels of a seeded random MNIST subset, train
with ``models.train`` (Adam), rank by |self-influence| (K-FAC family, or exact on the head only), by
training loss and at random, and retrain with the checked 10% fixed (same recipe, same seed). Also
the recipe's validation accuracy on a held-out 20% of the *noisy* training set (the selection rule).
Writes mislabel_net_sweep.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from influencekit.experiments import datasets
from influencekit.experiments import mislabel as ml

HERE = Path(__file__).resolve().parent

#: name -> recipe. hidden=() is multinomial logistic regression trained the same way.
SETTINGS = {
    "mlp32_e30_l2-4": dict(hidden=(32,), epochs=30, l2=1e-4),
    "mlp32_e100_l2-5": dict(hidden=(32,), epochs=100, l2=1e-5),
    "mlp32_e200_l2-6": dict(hidden=(32,), epochs=200, l2=1e-6),
    "mlp64_e100_l2-5": dict(hidden=(64,), epochs=100, l2=1e-5),
    "mlp64_e30_l2-3": dict(hidden=(64,), epochs=30, l2=1e-3),
    "mlp32_e60_l2-4": dict(hidden=(32,), epochs=60, l2=1e-4),
    "mlp64_e200_l2-6": dict(hidden=(64,), epochs=200, l2=1e-6),
    "mlp32_e15_l2-4": dict(hidden=(32,), epochs=15, l2=1e-4),
    # models.SmallCNN (conv 1->8, 8->16, 5x5 stride 2, 256->32, 32->10; 11,978 parameters)
    "cnn_e10_l2-4": dict(arch="cnn", epochs=10, l2=1e-4),
    "cnn_e30_l2-4": dict(arch="cnn", epochs=30, l2=1e-4),
    "cnn_e60_l2-4": dict(arch="cnn", epochs=60, l2=1e-4),
    "cnn_e30_l2-3": dict(arch="cnn", epochs=30, l2=1e-3),
    "cnn_e100_l2-5": dict(arch="cnn", epochs=100, l2=1e-5),
    "cnn_e200_l2-6": dict(arch="cnn", epochs=200, l2=1e-6),
}


def solver_options(spec: str) -> dict:
    """``ekfac`` / ``kfac`` (automatic per-layer damping), ``ekfac_d1e-4`` (fixed damping),
    ``exact_head_d1e-4`` (exact Hessian of the last layer only, damping 1e-4)."""
    name, _, d = spec.partition("_d")
    if name == "exact_head":
        return {"solver": "exact", "params": ("head.weight", "head.bias"), "damping": float(d or 0)}
    return {"solver": name, "damping": float(d) if d else None}


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--classes", default="all", choices=["all", "1v7"])
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    ap.add_argument("--solver", nargs="*", default=["ekfac"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "mislabel_net_sweep.json"))
    args = ap.parse_args()
    path = Path(args.out)
    allres = json.loads(path.read_text()) if path.exists() else {}
    classes = None if args.classes == "all" else (1, 7)
    Xtr, ytr, Xte, yte = datasets.mnist(None, classes=classes, flatten=False)  # images; the MLPs flatten below
    idx = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(args.seed))[:args.n].sort().values
    Xtr, ytr = Xtr[idx], ytr[idx]
    for name in args.settings:
        cfg = SETTINGS[name]
        for solver in args.solver:
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Xa, Xb = (Xtr, Xte) if cfg.get("arch") == "cnn" else (Xtr.flatten(1), Xte.flatten(1))
                data = ml.Data((Xa, ytr), (Xb, yte), f"MNIST {args.classes}", side=28)
                problem = ml.build(data, ml.Net(**cfg, **solver_options(solver)), seed=args.seed)
                r = ml.run(problem, validate=True, retrain_at=(0.0, 0.1))
            key = f"{args.classes}_n{args.n}_{name}_{solver}_s{args.seed}"
            at = r.at(0.1)
            rec = {"setting": cfg | {"hidden": list(cfg.get("hidden", ()))}, "solver": solver, "n": args.n,
                   "val_accuracy_noisy": r.val_accuracy, "flips_fitted": r.flips_fitted,
                   "clean": r.clean_accuracy, "noisy": r.noisy_accuracy, "found_at_10pct": at,
                   "acc_after_fix_10pct": {k: float(v[-1]) for k, v in r.accuracy.items()},
                   "found_at_5_20pct": {k: [r.at(0.05)[k], r.at(0.2)[k]] for k in at},
                   "seconds": time.perf_counter() - t}
            allres[key] = rec
            print(f"{key}: val {r.val_accuracy:.4f} fitted {r.flips_fitted:.2f} clean {rec['clean']:.4f} "
                  f"noisy {rec['noisy']:.4f} | found@10 si {at['self_influence']:.3f} loss {at['loss']:.3f} "
                  f"rand {at['random']:.3f} | acc fix10 " + " / ".join(
                      f"{k[:4]} {v:.4f}" for k, v in rec["acc_after_fix_10pct"].items())
                  + f" | {rec['seconds']:.0f}s", flush=True)
            path.write_text(json.dumps(allres, indent=1))


if __name__ == "__main__":
    main()
