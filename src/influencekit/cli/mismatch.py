"""``influencekit mismatch``: the domain-mismatch experiment on diabetes readmission (paper Sec. 5.3):
keep only a few, mostly readmitted children in training, then find them (and the age feature) by influence."""

from __future__ import annotations

import argparse
import json
import sys

from ..convention import SIGN_CONVENTION
from ..experiments import datasets, report
from ..experiments import mismatch as mm

help = "domain mismatch on diabetes readmission: the few training children behind a wrong test child (Sec. 5.3)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=20000, help="encounters sampled from the table (the paper: 20K)")
    p.add_argument("--l2", type=float, default=1e-5, help="L2 coefficient of the logistic regression")
    p.add_argument("--keep", type=int, default=4, help="training children kept (age [0-10))")
    p.add_argument("--keep-readmitted", type=int, default=3, help="of which readmitted")


def compute(n: int = 20000, l2: float = 1e-5, keep: int = 4, keep_readmitted: int = 3, data_dir: str | None = None,
            seed: int = 0) -> mm.MismatchResult:
    return mm.run(datasets.diabetes(data_dir), n=n, l2=l2, keep=keep, keep_readmitted=keep_readmitted, seed=seed)


def add_to_report(rep: report.Report, r: mm.MismatchResult) -> None:
    rep.heading(f"Domain mismatch: diabetes readmission, logistic regression (n = {r.n}, p = {r.p})")
    rep.text(f"Training keeps {len(r.kept_children)} children (age [0-10)); test children are classified with "
             f"accuracy {r.children_test_accuracy:.0%} (all test points: {r.overall_test_accuracy:.0%}). Explained: "
             f"test child {r.test_index}, label {r.test_label}, predicted P(readmitted) = {r.test_probability:.2f}. "
             f"{r.children_in_top10} of the {len(r.kept_children)} training children are among its 10 most "
             f"influential training points (ranks {r.children_ranks}, 0 = most influential by |I_up,loss|).")
    kept = set(r.kept_children)
    rep.table(["rank", "train index", "child (age [0-10))", "I_up,loss", "role"],
              [[k, i, i in kept, v, "harmful" if v > 0 else "helpful"]
               for k, (i, v) in enumerate(zip(r.top10, r.top10_up_loss))],
              caption="the 10 most influential training points for the test child")
    names, vals = zip(*r.top_present_features)
    rep.figure(report.bar_figure(list(names), list(vals), "features of the kept children: x * I_pert,loss",
                                 "first-order change of the test loss (per unit eps) scaling the feature by 1+eps"),
               "Which features of the kept training children drive the error: x * I_pert,loss summed over them "
               "(I_pert,loss = -grad_x (s_test^T grad_theta L(z)), computed locally with torch.func).")
    rep.table(["feature", "I_pert,loss summed over kept children"], [[f, v] for f, v in r.top_features],
              caption="features by |I_pert,loss| (including one-hot levels the children do not have)")


def run(args: argparse.Namespace) -> int:
    r = compute(args.n, args.l2, args.keep, args.keep_readmitted, args.data_dir, args.seed)
    if args.out:
        rep = report.Report("influencekit mismatch")
        add_to_report(rep, r)
        path = rep.write(args.out)
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
