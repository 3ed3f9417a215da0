"""``influencekit topk``: the top helpful and harmful training points of chosen test points, over all
n training points or only over k candidates per test point (``experiments.topk``)."""

from __future__ import annotations

import argparse

from . import SOLVERS, add_problem_arguments, positive_int

help = ("top-k helpful and harmful training points for test points (optionally prefiltered: feature-space "
        "k-NN as in FastIF, or by the last-layer gradient term)")

#: the kinds of ``influencekit.fastif.index.KINDS``
INDEX_KINDS = ["flat", "ivf", "hnsw"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_problem_arguments(p)
    p.add_argument("--top", type=positive_int, default=10, help="how many helpful and how many harmful points to list")
    p.add_argument("--prefilter", default="none", choices=("none", "knn", "grad"),
                   help="knn: score only each test point's k nearest training points in feature space (FastIF); "
                        "grad: only the k/2 with the largest harmful and k/2 with the largest helpful last-layer "
                        "term of the influence (inner-product search; far higher recall of the top points)")
    p.add_argument("--k", type=positive_int, default=1000, help="candidates per test point with --prefilter knn/grad")
    p.add_argument("--index", default="flat", choices=INDEX_KINDS, help="FAISS index: flat (exact), ivf, hnsw")
    p.add_argument("--index-dir", default=None,
                   help="where the index is saved and reused (default: OUT/index with --out, else not saved)")
    p.add_argument("--solver", default="cg", choices=SOLVERS, help="inverse-HVP solver for s_test")
    p.add_argument("--damping", type=float, default=None, help="Hessian damping (default: the model's)")
    p.add_argument("--depth", type=positive_int, default=None, help="LiSSA depth")
    p.add_argument("--repeats", type=positive_int, default=None, help="LiSSA repeats")
    p.add_argument("--lissa-batch", type=positive_int, default=None, help="LiSSA mini-batch size")
    p.add_argument("--max-iter", type=positive_int, default=None, help="CG iterations cap")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes for s_test and scoring (without a prefilter)")


def _solver_options(args: argparse.Namespace) -> dict:
    keys = {"lissa": {"depth": args.depth, "repeats": args.repeats, "batch_size": args.lissa_batch},
            "cg": {"max_iter": args.max_iter}}.get(args.solver, {})
    if args.damping is not None:
        keys["damping"] = args.damping
    return {k: v for k, v in keys.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from ..convention import SIGN_CONVENTION
    from ..experiments import topk
    from . import problem_from_args

    t0 = time.perf_counter()
    problem = problem_from_args(args)
    train_seconds = time.perf_counter() - t0
    problem.test_at(args.test_index)  # out of range: a typed error before any work
    prefilter = None if args.prefilter == "none" else args.prefilter
    index_dir = args.index_dir or (str(Path(args.out) / "index") if args.out else None)
    r = topk.run(problem, args.test_index, args.top, prefilter=prefilter, candidates=args.k, index_kind=args.index,
                 index_dir=index_dir, solver=args.solver, workers=args.workers, progress=not args.json,
                 **_solver_options(args))
    r.seconds = {"train": train_seconds, **r.seconds}
    result = r.to_json()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "topk.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{r.problem}: {r.notes}; n = {r.n}, p = {r.p}")
    print(f"prefilter {args.prefilter}" + (f" ({r.candidates} candidates per test point, {args.index} index"
                                            f"{' in ' + r.index_path if r.index_path else ''}, "
                                            f"{'built' if r.index_rebuilt else 'reused'}; {r.scored} distinct "
                                            "training points scored)" if prefilter else ""))
    print(f"solver {r.settings['solver']}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r.seconds.items()))
    print(f"convention: {SIGN_CONVENTION}")
    for t in r.tests:
        print(f"\ntest point {t.test_index} (label {t.label})")
        print(f"  {'harmful: train idx':>20} {'label':>5} {'I_up,loss':>12}   {'helpful: train idx':>20} "
              f"{'label':>5} {'I_up,loss':>12}")
        for h, g in zip(t.harmful, t.helpful):
            print(f"  {h.train_index:>20} {h.label!s:>5} {h.up_loss:>12.4e}   {g.train_index:>20} "
                  f"{g.label!s:>5} {g.up_loss:>12.4e}")
    return 0
