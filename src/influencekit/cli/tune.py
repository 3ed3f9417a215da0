"""``influencekit tune``: the cheapest inverse-HVP setting whose influence scores keep Pearson >= a
target against a high-quality reference, with the table of every setting tried (``experiments.tune``)."""

from __future__ import annotations

import argparse

from . import add_problem_arguments, positive_int

help = "search LiSSA/CG settings and damping for the cheapest one matching a reference (Pearson >= target)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_problem_arguments(p)
    p.add_argument("--target", type=float, default=0.95, help="required Pearson against the reference")
    p.add_argument("--damping", type=float, default=None, help="reference damping (default: the model's)")
    p.add_argument("--reference", default="cg", choices=("cg", "lissa"),
                   help="cg: CG to tol 1e-8 (small models); lissa: depth 4000, batch 256 (large n, cheaper)")
    p.add_argument("--sample", type=positive_int, default=2000, help="training points the scores are correlated on")
    p.add_argument("--cost", default="hvps", choices=("hvps", "seconds"),
                   help="cheapest by example-HVPs per test point (default, exact) or by measured seconds")
    p.add_argument("--exhaustive", action="store_true", help="try every setting instead of stopping at the "
                   "first (cheapest) passing one")
    p.add_argument("--no-cg", action="store_true", help="leave CG out of the grid (one CG iteration = n HVPs)")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from ..experiments import tune
    from . import problem_from_args

    t0 = time.perf_counter()
    problem = problem_from_args(args)
    problem.test_at(args.test_index)  # out of range: a typed error before any work
    r = tune.run(problem, args.test_index, target=args.target, damping=args.damping, reference=args.reference,
                 sample=args.sample, cost=args.cost, exhaustive=args.exhaustive, cg=not args.no_cg, seed=args.seed,
                 progress=not args.json)
    r.seconds = time.perf_counter() - t0  # training included
    result = r.to_json()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "tune.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return 0 if r.best else 1
    print(f"{r.problem}: {r.notes}; n = {r.n}, p = {r.p}")
    print(f"reference {r.reference}; target Pearson >= {r.target} (mean over test points {r.test_index}); "
          f"cost = {'example-HVPs per test point' if r.cost_unit == 'hvps' else 'seconds'}")
    print(f"{'solver':>6} {'options':<60} {'HVPs/test':>11} {'seconds':>8} {'Pearson':>8} {'min':>7}  ok")
    for t in r.trials:
        ok = "yes" if t["passed"] else t["error"][:40] or "no"
        print(f"{t['solver']:>6} {tune.options_text(t['options']):<60} {t['hvps']:>11.0f} {t['seconds']:>8.2f} "
              f"{t['pearson']:>8.4f} {t['min_pearson']:>7.4f}  {ok}")
    if r.best is None:
        print(f"no setting reached Pearson {r.target}; try --exhaustive, more damping or a looser target")
        return 1
    b = r.best
    print(f"chosen: {b['solver']} {b['options']} ({b['hvps']:.0f} example-HVPs per test point, "
          f"Pearson {b['pearson']:.4f})")
    return 0
