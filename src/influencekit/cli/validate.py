"""``influencekit validate``: influence against actual leave-one-out retraining on a named problem
(``experiments.validate``)."""

from __future__ import annotations

import argparse

from . import PROBLEMS, SOLVERS, correlation_count, index, positive_int

help = "train a named problem, compute influence, retrain leave-one-out on the top-k points, print Pearson/Spearman"

#: the keys of ``--json``: the summary, without the per-point lists
SUMMARY = ("pearson", "spearman", "k", "solver", "seconds", "retrain_seconds", "train_seconds", "problem", "n", "p",
           "test_index", "pearson_newton", "spearman_newton", "settings", "convention")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", "--workload", dest="problem", default="digits-logreg", choices=PROBLEMS,
                   help="model and data (digits-* use bundled data; mnist-* need mnist.npz)")
    p.add_argument("--solver", default=None, choices=SOLVERS, help="inverse-HVP solver (default: the problem's, cg)")
    p.add_argument("--k", type=correlation_count, default=50,
                   help="retrain leave-one-out on the k most influential points")
    p.add_argument("--test-index", type=index, default=None, help="test point (default: the highest test loss)")
    p.add_argument("--damping", type=float, default=None, help="override the problem's damping")
    p.add_argument("--t", type=float, default=1e-3, help="SmoothHinge temperature (digits-svm, mnist-svm)")
    p.add_argument("--n-train", type=positive_int, default=None, help="training subset size (default: the problem's)")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from ..convention import SIGN_CONVENTION
    from ..experiments import problems, validate

    t0 = time.perf_counter()
    problem = problems.make(args.problem, data_dir=args.data_dir, seed=args.seed, t=args.t, n_train=args.n_train)
    train_seconds = time.perf_counter() - t0
    if args.test_index is not None:
        problem.test_at(args.test_index)  # out of range: a typed error before any work
    options = {} if args.damping is None else {"damping": args.damping}
    r = validate.run(problem, args.solver, k=args.k, test_index=args.test_index, **options)
    if args.json:
        out = {**r.to_json(), "train_seconds": train_seconds}
        print(json.dumps({k: out[k] for k in SUMMARY if k in out}))
        return 0
    print(f"problem {r.problem}: n = {r.n} training points, p = {r.p} parameters in scope"
          + (f" ({r.notes})" if r.notes else ""))
    print(f"solver {r.solver} {r.settings['solver']}; test point {r.test_index}"
          + (" (highest test loss)" if args.test_index is None else ""))
    print(f"training: {train_seconds:.1f} s; influence: {r.seconds:.2f} s; leave-one-out retraining of {r.k} "
          f"points: {r.retrain_seconds:.1f} s")
    print(f"convention: {SIGN_CONVENTION}")
    print(f"{'train idx':>9} {'predicted -(1/n) I_up,loss':>27} {'actual LOO change':>18}")
    for i, p, a in list(zip(r.train_index, r.predicted, r.actual))[:10]:
        print(f"{i:>9} {p:>27.6f} {a:>18.6f}")
    print(f"Pearson R = {r.pearson:.4f}   Spearman = {r.spearman:.4f}   (k = {r.k})")
    if r.newton:
        print(f"Newton-step LOO (own curvature removed): Pearson R = {r.newton['pearson']:.4f}   "
              f"Spearman = {r.newton['spearman']:.4f}")
    return 0
