"""``influencekit mismatch``: the domain-mismatch experiment on diabetes readmission (paper Sec. 5.3):
keep only a few, mostly readmitted children in training, then find them (and the age feature) by influence.
The experiment: ``influencekit.experiments.mismatch``."""

from __future__ import annotations

import argparse

help = "domain mismatch on diabetes readmission: the few training children behind a wrong test child (Sec. 5.3)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=20000, help="encounters sampled from the table (the paper: 20K)")
    p.add_argument("--l2", type=float, default=1e-5, help="L2 coefficient of the logistic regression")
    p.add_argument("--keep", type=int, default=4, help="training children kept (age [0-10))")
    p.add_argument("--keep-readmitted", type=int, default=3, help="of which readmitted")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..convention import SIGN_CONVENTION
    from ..experiments import mismatch, report

    problem = mismatch.problem(data_dir=args.data_dir, n=args.n, l2=args.l2, keep=args.keep,
                               keep_readmitted=args.keep_readmitted, seed=args.seed)
    r = mismatch.run(problem)
    if args.out:
        page = report.Page("influencekit mismatch")
        r.report(page)
        path = page.write(args.out)
        print(f"report written to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(r.to_json()))
        return 0
    print(f"diabetes readmission, logistic regression: n = {r.n}, p = {r.p}")
    print(f"convention: {SIGN_CONVENTION}")
    print(f"test children accuracy {r.children_test_accuracy:.1%} (overall {r.overall_test_accuracy:.1%}); "
          f"explained test child {r.test_index}: label {r.test_label}, P(readmitted) = {r.test_probability:.3f}")
    print(f"kept training children {r.kept_children}: {r.children_in_top10} in the top 10 by |I_up,loss| "
          f"(ranks {r.children_ranks}; I_up,loss {[round(v, 1) for v in r.children_up_loss]})")
    print("top features of the kept children by |x * I_pert,loss|: "
          + ", ".join(f"{f} ({v:+.3g})" for f, v in r.top_present_features[:5]))
    return 0
