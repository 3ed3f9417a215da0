"""``influencekit tune``: the cheapest inverse-HVP setting whose influence scores keep Pearson >= a
target against a high-quality reference, with the table of every setting tried (FastIF step 2)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..convention import SIGN_CONVENTION
from ..experiments.demo import add_setup_arguments, setup_from_args
from ..fastif.tune import DEFAULT_LISSA, default_grid, tune
from ..influence import Influence

help = "search LiSSA/CG settings and damping for the cheapest one matching a reference (Pearson >= target)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_setup_arguments(p)
    p.add_argument("--target", type=float, default=0.95, help="required Pearson against the reference")
    p.add_argument("--damping", type=float, default=None, help="reference damping (default: the model's)")
    p.add_argument("--reference", default="cg", choices=("cg", "lissa"),
                   help="cg: CG to tol 1e-8 (small models); lissa: depth 4000, batch 256 (large n, cheaper)")
    p.add_argument("--sample", type=int, default=2000, help="training points the scores are correlated on")
    p.add_argument("--cost", default="hvps", choices=("hvps", "seconds"),
                   help="cheapest by example-HVPs per test point (default, exact) or by measured seconds")
    p.add_argument("--exhaustive", action="store_true", help="try every setting instead of stopping at the "
                   "first (cheapest) passing one")
    p.add_argument("--no-cg", action="store_true", help="leave CG out of the grid (one CG iteration = n HVPs)")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    s = setup_from_args(args)
    damping = s.damping if args.damping is None else args.damping
    ref_opts = {"tol": 1e-8, "max_iter": 1000} if args.reference == "cg" else \
        {"depth": 4000, "batch_size": 256, "repeats": 1, "seed": 1}  # another seed than the trials (seed 0)
    inf = Influence(s.model, s.loss, s.train, l2=s.l2, solver=args.reference, damping=damping, **ref_opts)
    idx = torch.as_tensor(args.test_index)
    G = inf.test_gradients((s.test[0][idx], s.test[1][idx]))
    t = time.perf_counter()
    inf.fit()
    reference = inf.solver.solve(G)
    ref_seconds = time.perf_counter() - t
    grid = default_grid(inf.n, damping)
    grid.append(("lissa", {"damping": damping, **DEFAULT_LISSA}))  # the defaults, as the baseline
    if args.no_cg:
        grid = [g for g in grid if g[0] != "cg"]
    best, trials = tune(inf.objective, G, reference, grid=grid, damping=damping, target=args.target,
                        sample=args.sample, cost=args.cost, exhaustive=args.exhaustive, seed=args.seed,
                        progress=not args.json)
    result = {"convention": SIGN_CONVENTION, "model": s.name, "notes": s.notes, "n": inf.n, "p": inf.objective.p,
              "test_index": args.test_index, "target": args.target, "cost_unit": args.cost,
              "reference": {**inf.solver.settings(), "seconds": ref_seconds},
              "best": best.row() if best else None, "trials": [t.row() for t in trials],
              "seconds": time.perf_counter() - t0}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "tune.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return 0 if best else 1
    print(f"{s.name}: {s.notes}; n = {inf.n}, p = {inf.objective.p}")
    print(f"reference {inf.solver.settings()} ({ref_seconds:.1f} s); target Pearson >= {args.target} "
          f"(mean over test points {args.test_index}); cost = example-HVPs per test point")
    print(f"{'solver':>6} {'options':<60} {'HVPs/test':>11} {'seconds':>8} {'Pearson':>8} {'min':>7}  ok")
    for tr in trials:
        opts = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in tr.options.items())
        print(f"{tr.solver:>6} {opts:<60} {tr.hvps:>11.0f} {tr.seconds:>8.2f} {tr.pearson:>8.4f} "
              f"{tr.min_pearson:>7.4f}  {'yes' if tr.passed else tr.error[:40] or 'no'}")
    if best is None:
        print(f"no setting reached Pearson {args.target}; try --exhaustive, more damping or a looser target")
        return 1
    print(f"chosen: {best.solver} {best.options} ({best.hvps:.0f} example-HVPs per test point, "
          f"Pearson {best.pearson:.4f})")
    return 0
