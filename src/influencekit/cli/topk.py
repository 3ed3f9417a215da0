"""``influencekit topk``: the top-k helpful and harmful training points for chosen test points,
over all n training points or only over k candidates per test point: its nearest neighbours in
feature space (FastIF) or the largest last-layer terms of its influence (``fastif.gradients``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..convention import SIGN_CONVENTION
from ..experiments.demo import add_setup_arguments, setup_from_args
from ..fastif import (
    candidate_scores,
    embed,
    fingerprint,
    gradient_candidates,
    gradient_embedding,
    head_block,
    head_params,
    load_or_build,
)
from ..fastif.index import KINDS
from ..fastif.prefilter import top_influential
from ..influence import Influence, scores
from ..scale.pool import parallel_s_test, parallel_scores
from ..solvers import SOLVERS

help = ("top-k helpful and harmful training points for test points (optionally prefiltered: feature-space "
        "k-NN as in FastIF, or by the last-layer gradient term)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_setup_arguments(p)
    p.add_argument("--top", type=int, default=10, help="how many helpful and how many harmful points to list")
    p.add_argument("--prefilter", default="none", choices=("none", "knn", "grad"),
                   help="knn: score only each test point's k nearest training points in feature space (FastIF); "
                        "grad: only the k/2 with the largest harmful and k/2 with the largest helpful last-layer "
                        "term of the influence (inner-product search; far higher recall of the top points)")
    p.add_argument("--k", type=int, default=1000, help="candidates per test point with --prefilter knn/grad")
    p.add_argument("--index", default="flat", choices=KINDS, help="FAISS index: flat (exact), ivf, hnsw")
    p.add_argument("--index-dir", default=None,
                   help="where the index is saved and reused (default: OUT/index with --out, else not saved)")
    p.add_argument("--solver", default="cg", choices=sorted(SOLVERS), help="inverse-HVP solver for s_test")
    p.add_argument("--damping", type=float, default=None, help="Hessian damping (default: the model's)")
    p.add_argument("--depth", type=int, default=None, help="LiSSA depth")
    p.add_argument("--repeats", type=int, default=None, help="LiSSA repeats")
    p.add_argument("--lissa-batch", type=int, default=None, help="LiSSA mini-batch size")
    p.add_argument("--max-iter", type=int, default=None, help="CG iterations cap")
    p.add_argument("--workers", type=int, default=1, help="worker processes for s_test and scoring")


def _solver_options(args: argparse.Namespace) -> dict:
    keys = {"lissa": {"depth": args.depth, "repeats": args.repeats, "batch_size": args.lissa_batch},
            "cg": {"max_iter": args.max_iter}}.get(args.solver, {})
    return {k: v for k, v in keys.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    s = setup_from_args(args)
    times = {"train": time.perf_counter() - t0}
    damping = s.damping if args.damping is None else args.damping
    inf = Influence(s.model, s.loss, s.train, l2=s.l2, solver=args.solver, damping=damping, **_solver_options(args))
    obj = inf.objective
    idx = torch.as_tensor(args.test_index)
    test = (s.test[0][idx], s.test[1][idx])

    t = time.perf_counter()
    G = inf.test_gradients(test)
    inf.fit()
    S = parallel_s_test(inf.solver, G, workers=args.workers)
    times["s_test"] = time.perf_counter() - t

    extra: dict = {}
    t = time.perf_counter()
    if args.prefilter != "none":
        index_dir = args.index_dir or (str(Path(args.out) / "index") if args.out else None)
        path = Path(index_dir) / f"{s.name}-{args.prefilter}-{args.index}" if index_dir else None
        if args.prefilter == "knn":
            fp = fingerprint(s.model, s.train[0], s.train[1], "model.features")
            index, rebuilt = load_or_build(path, lambda: embed(s.model, s.train), fp, kind=args.index)
            _, cand = index.search(embed(s.model, test), min(args.k, obj.n))
        else:
            fp = fingerprint(s.model, s.train[0], s.train[1], "grad", *head_params(s.model))
            index, rebuilt = load_or_build(path, lambda: gradient_embedding(obj, progress=True), fp, kind=args.index,
                                           metric="ip")
            cand = gradient_candidates(index, head_block(obj, S), min(max(args.k, 2), obj.n))
        times["index"] = time.perf_counter() - t
        t = time.perf_counter()
        up = -candidate_scores(obj, S, cand, progress=True)
        best = top_influential(up, cand, args.top)
        extra = {"k": int(cand.shape[1]), "index": args.index, "index_rebuilt": rebuilt,
                 "index_path": str(path) if path else None, "scored": int(torch.unique(cand).numel())}
    else:
        up = -(parallel_scores(obj, S, workers=args.workers) if args.workers > 1
               else scores(obj, S, method="grad", progress=True))
        best = top_influential(up, top=args.top)
        extra = {"scored": obj.n}
    times["scoring"] = time.perf_counter() - t

    ytr = s.train[1]
    tests = []
    for row, j in enumerate(args.test_index):
        entry = {"test_index": j, "label": int(s.test[1][j])}
        for kind in ("harmful", "helpful"):
            entry[kind] = [{"train_index": int(i), "label": int(ytr[i]), "up_loss": float(v), "loo": -float(v) / obj.n}
                           for i, v in zip(best[f"{kind}_index"][row], best[kind][row])]
        tests.append(entry)
    result = {"convention": SIGN_CONVENTION, "model": s.name, "notes": s.notes, "n": obj.n, "p": obj.p,
              "prefilter": args.prefilter, **extra, "solver": inf.solver.settings(), "seconds": times, "tests": tests}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "topk.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{s.name}: {s.notes}; n = {obj.n}, p = {obj.p}")
    print(f"prefilter {args.prefilter}" + (f" (k = {extra['k']}, {args.index} index, "
                                            f"{'built' if extra['index_rebuilt'] else 'reused'}; "
                                            f"{extra['scored']} distinct training points scored)"
                                            if args.prefilter != "none" else ""))
    print(f"solver {inf.solver.settings()}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    print(f"convention: {SIGN_CONVENTION}")
    for e in tests:
        print(f"\ntest point {e['test_index']} (label {e['label']})")
        print(f"  {'harmful: train idx':>20} {'label':>5} {'I_up,loss':>12}   {'helpful: train idx':>20} "
              f"{'label':>5} {'I_up,loss':>12}")
        for h, g in zip(e["harmful"], e["helpful"]):
            print(f"  {h['train_index']:>20} {h['label']:>5} {h['up_loss']:>12.4e}   {g['train_index']:>20} "
                  f"{g['label']:>5} {g['up_loss']:>12.4e}")
    return 0
