"""``influencekit validate``: influence against actual leave-one-out retraining on a named workload."""

from __future__ import annotations

import argparse
import json
import time

from ..convention import SIGN_CONVENTION
from ..experiments.workloads import WORKLOADS, make_workload, validate
from ..solvers import SOLVERS

help = "train a named workload, compute influence, retrain leave-one-out on the top-k points, print Pearson/Spearman"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="digits-logreg", choices=sorted(WORKLOADS),
                   help="model and data (digits-* use bundled data; mnist-* need mnist.npz)")
    p.add_argument("--solver", default="cg", choices=sorted(SOLVERS), help="inverse-HVP solver")
    p.add_argument("--k", type=int, default=50, help="retrain leave-one-out on the k most influential points")
    p.add_argument("--test-index", type=int, default=None, help="test point (default: the highest test loss)")
    p.add_argument("--damping", type=float, default=None, help="override the workload's damping")
    p.add_argument("--t", type=float, default=1e-3, help="SmoothHinge temperature (digits-svm, mnist-svm)")
    p.add_argument("--n-train", type=int, default=None, help="training subset size (cnn workloads)")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    opts = {"data_dir": args.data_dir, "seed": args.seed, "t": args.t}
    if args.n_train:
        opts["n_train"] = args.n_train
    w = make_workload(args.workload, **opts)
    build = time.perf_counter() - t0
    solver_opts = {} if args.damping is None else {"damping": args.damping}
    r = validate(w, args.solver, k=args.k, test_index=args.test_index, **solver_opts)
    r["train_seconds"] = build
    if args.json:
        keep = ("pearson", "spearman", "k", "solver", "seconds", "retrain_seconds", "train_seconds", "workload",
                "n", "p", "test_index", "pearson_newton", "spearman_newton", "settings", "convention")
        print(json.dumps({k: r[k] for k in keep if k in r}))
        return 0
    print(f"workload {r['workload']}: n = {r['n']} training points, p = {r['p']} parameters in scope"
          + (f" ({w.notes})" if w.notes else ""))
    print(f"solver {r['solver']} {r['settings']}; test point {r['test_index']} (highest test loss by default)")
    print(f"influence: {r['seconds']:.2f} s; leave-one-out retraining of {r['k']} points: {r['retrain_seconds']:.1f} s")
    print(f"convention: {SIGN_CONVENTION}")
    print(f"{'train idx':>9} {'predicted -(1/n) I_up,loss':>27} {'actual LOO change':>18}")
    for i, p, a in list(zip(r["train_index"], r["predicted"], r["actual"]))[:10]:
        print(f"{i:>9} {p:>27.6f} {a:>18.6f}")
    print(f"Pearson R = {r['pearson']:.4f}   Spearman = {r['spearman']:.4f}   (k = {r['k']})")
    if "pearson_newton" in r:
        print(f"Newton-step LOO (own curvature removed): Pearson R = {r['pearson_newton']:.4f}   "
              f"Spearman = {r['spearman_newton']:.4f}")
    return 0
