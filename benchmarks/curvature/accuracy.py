"""Accuracy, time and peak memory of every influencekit inverse-HVP solver against exact influence.

For each problem, a model is trained once; then every method runs in its own subprocess (so its
peak resident memory, ru_maxrss, is its own) and computes I_up,loss = -grad L(z_test)^T
(H + dI)^{-1} grad L(z_i) for ``--tests`` test points and all n training points, in float64.
The reference is exact influence (explicit float64 Hessian, Cholesky solve) with the same
damping d. Reported per method (mean over test points): Pearson and Spearman correlation of the
n scores with exact, overlap of the top-10 training points by |influence|, seconds (fit + solve
+ scoring) and peak memory.

Signs: ``influencekit.convention`` (correlations do not depend on the sign or the 1/n).

Problems: "mlp": MLP 64-64-32-10 (6,570 parameters) on sklearn digits, 10 classes, n = 1,257.
"cnn": SmallCNN(channels=(4, 8), hidden=16) (3,146 parameters) on the first ``--cnn-n`` MNIST
training images (28x28). The CNN is a reduced SmallCNN so the exact Hessian stays affordable on a
shared 2-core CPU.

    python benchmarks/curvature/accuracy.py                  # both problems, 20 test points
    python benchmarks/curvature/accuracy.py --problems mlp --methods kfac ekfac

Each problem's table is recorded in benchmarks/curvature/accuracy.json (key: the problem).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

import influencekit as ik
from influencekit.curvature import spectrum
from influencekit.experiments import datasets
from influencekit.experiments.models import MLP, SmallCNN, train
from influencekit.influence import scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

METHODS = {
    "exact": {},
    "kfac": {},
    "ekfac": {},
    "arnoldi": {"rank": 100, "block": 20},
    "cg": {"tol": 1e-6},
    "pcg": {"tol": 1e-6},
    "lissa": {"depth": 300, "batch_size": 128, "repeats": 1},
}


def make_model(problem: str) -> torch.nn.Module:
    return MLP(64, (64, 32), 10) if problem == "mlp" else SmallCNN(channels=(4, 8), hidden=16)


def load_data(problem: str, cnn_n: int, tests: int):
    if problem == "mlp":
        Xtr, ytr, Xte, yte = datasets.digits(classes=None, dtype=torch.float32)
    else:
        Xtr, ytr, Xte, yte = datasets.mnist()
        Xtr, ytr = Xtr[:cnn_n], ytr[:cnn_n]
    return Xtr.float(), ytr, Xte[:tests].float(), yte[:tests]


def objective(problem, state, data, l2):
    model = make_model(problem).double()
    model.load_state_dict({k: v.double() for k, v in state.items()})
    return ik.Objective(model.eval(), "cross_entropy", (data[0].double(), data[1]), l2=l2, batch_size=256)


def worker(args) -> None:
    out = Path(args.out)
    meta = json.loads((out / f"{args.problem}.json").read_text())
    data = load_data(args.problem, meta["cnn_n"], meta["tests"])
    obj = objective(args.problem, load_file(out / f"{args.problem}.safetensors"), data, meta["l2"])
    t0 = time.perf_counter()
    G = obj.grads(data[2].double(), data[3])
    if args.worker == "exact":  # the reference: explicit float64 Hessian, one Cholesky (cheaper than eigh)
        H = obj.hessian() + meta["damping"] * torch.eye(obj.p, dtype=torch.float64)
        L, bad = torch.linalg.cholesky_ex(H)
        S = torch.cholesky_solve(G.T, L).T if not bad else torch.linalg.solve(H, G.T).T
        solver = None
    else:
        solver = ik.make_solver(args.worker, damping=meta["damping"], **METHODS[args.worker]).fit(obj)
        S = solver.solve(G)
    up_loss = -scores(obj, S)
    seconds = time.perf_counter() - t0
    save_file({"up_loss": up_loss.contiguous()}, str(out / f"{args.problem}-{args.worker}.safetensors"))
    info = {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "settings": solver.settings() if solver else {"solver": "exact (Cholesky)", "damping": meta["damping"]},
            "iterations": getattr(solver, "iterations", None)}
    (out / f"{args.problem}-{args.worker}.result.json").write_text(json.dumps(info))


def prepare(problem: str, args) -> dict:
    torch.manual_seed(args.seed)
    data = load_data(problem, args.cnn_n, args.tests)
    model = train(make_model(problem), "cross_entropy", data[0], data[1], l2=args.l2, epochs=args.epochs,
                  lr=3e-3, seed=args.seed)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(Path(args.out) / f"{problem}.safetensors"))
    obj = objective(problem, state, data, args.l2)
    sp = spectrum(obj, steps=30)
    # the same damping for every method: at least 0.01, more if H has negative curvature
    damping = max(0.01, sp.suggested_damping)
    meta = {"problem": problem, "n": obj.n, "p": obj.p, "tests": args.tests, "cnn_n": args.cnn_n, "l2": args.l2,
            "damping": damping, "lambda_min": sp.min_eigenvalue, "lambda_max": sp.max_eigenvalue}
    (Path(args.out) / f"{problem}.json").write_text(json.dumps(meta))
    return meta


def metrics(a: torch.Tensor, ref: torch.Tensor) -> dict:
    """Mean over test points of Pearson, Spearman and top-10 (by |influence|) overlap."""
    pe, sp, top = [], [], []
    for x, r in zip(a.numpy(), ref.numpy()):
        pe.append(np.corrcoef(x, r)[0, 1])
        sp.append(spearmanr(x, r).statistic)
        top.append(len(set(np.argsort(-np.abs(x))[:10]) & set(np.argsort(-np.abs(r))[:10])) / 10)
    return {"pearson": float(np.mean(pe)), "spearman": float(np.mean(sp)), "top10": float(np.mean(top))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    ap.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "exact"], choices=list(METHODS))
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--cnn-n", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/curvature/out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--problem", help=argparse.SUPPRESS)
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)
    torch.set_num_threads(2)
    report = {"sign": ik.SIGN_CONVENTION, "problems": {}}
    for problem in args.problems:
        meta = prepare(problem, args)
        print(f"\n{problem}: n={meta['n']} p={meta['p']} damping={meta['damping']:.3g} "
              f"(Lanczos lambda_min {meta['lambda_min']:.3g}, lambda_max {meta['lambda_max']:.3g}), "
              f"{args.tests} test points, float64")
        rows = {}
        for method in ["exact", *[m for m in args.methods if m != "exact"]]:
            cmd = [sys.executable, __file__, "--worker", method, "--problem", problem, "--out", args.out]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode:
                print(f"  {method:8s} FAILED: {run.stderr.strip().splitlines()[-1]}")
                rows[method] = {"error": run.stderr.strip().splitlines()[-1]}
                continue
            info = json.loads((Path(args.out) / f"{problem}-{method}.result.json").read_text())
            up = load_file(str(Path(args.out) / f"{problem}-{method}.safetensors"))["up_loss"]
            if method == "exact":
                ref = up
            rows[method] = {**metrics(up, ref), **info}
            r = rows[method]
            its = f" iters={r['iterations']}" if r["iterations"] is not None else ""
            print(f"  {method:8s} pearson={r['pearson']:.4f} spearman={r['spearman']:.4f} top10={r['top10']:.2f} "
                  f"seconds={r['seconds']:.1f} peak_mb={r['peak_mb']:.0f}{its}", flush=True)
        report["problems"][problem] = {"meta": meta, "methods": rows}
        record(__file__, problem, report["problems"][problem])
    (Path(args.out) / "accuracy.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
