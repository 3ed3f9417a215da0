"""``influencekit report --out DIR``: the main job. One self-contained HTML report (DIR/report.html,
figures also as PNG, figures in DIR/summary.json) on bundled data: explanations of a few test
digits, the leave-one-out check, influence vs distance, and mislabel detection; with ``--full``
also MNIST and Enron mislabel detection and the diabetes domain mismatch (shared data)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..convention import SIGN_CONVENTION
from ..errors import InputError
from ..experiments import report
from . import explain, mislabel, mismatch

help = "build the full HTML report (explain, LOO check, mislabel; --full adds MNIST/Enron/diabetes) into --out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true",
                   help="add MNIST and Enron mislabel detection and the diabetes mismatch (needs the shared data)")
    p.add_argument("--k", type=int, default=30, help="LOO check: retrain leave-one-out on the k most influential")
    p.add_argument("--mnist-train", type=int, default=5000, help="--full: MNIST 1 vs 7 training subset size")


def loo_section(rep: report.Report, k: int, seed: int) -> dict:
    """Predicted -(1/n) I_up,loss against actual leave-one-out retraining on digits 1 vs 7."""
    from ..experiments.workloads import make_workload, validate

    r = validate(make_workload("digits-logreg", seed=seed), "exact", k=k)
    rep.heading(f"Leave-one-out check: digits 1 vs 7 logistic regression (n = {r['n']}, p = {r['p']})")
    rep.figure(report.loo_figure(r["predicted"], r["actual"], f"Pearson R = {r['pearson']:.3f}, Spearman = "
                                 f"{r['spearman']:.3f}, k = {r['k']}"),
               f"test point {r['test_index']} (highest test loss): the {r['k']} training points with the largest "
               f"|influence| retrained out one at a time. Pearson R = {r['pearson']:.4f}, Spearman = "
               f"{r['spearman']:.4f}.")
    rep.table(["train index", "predicted -(1/n) I_up,loss", "actual LOO change"],
              [[i, p, a] for i, p, a in zip(r["train_index"], r["predicted"], r["actual"])])
    return {k_: r[k_] for k_ in ("pearson", "spearman", "k", "n", "p", "test_index", "seconds", "retrain_seconds")}


def run(args: argparse.Namespace) -> int:
    if not args.out:
        raise InputError("report needs --out DIR (the folder to write report.html and the figures into).")
    out = Path(args.out)
    t0 = time.perf_counter()
    rep = report.Report("influencekit report: which training points are responsible for a prediction")
    rep.text("Influence functions (Koh & Liang 2017) computed with influencekit on small models; every number "
             "below can be reproduced with the influencekit CLI (explain, validate, mislabel, mismatch).")
    summary: dict = {"convention": SIGN_CONVENTION}
    steps = ["explain", "loo", "mislabel-digits"]
    if args.full:
        steps += ["mislabel-mnist", "mislabel-enron", "mismatch"]
    bar = tqdm(steps, desc="report", unit="section", disable=args.json)
    for step in bar:
        bar.set_postfix_str(step)
        if step == "explain":
            res = explain.compute("digits", "logreg", None, 5, True, 1e-2, args.data_dir, args.seed)
            explain.add_to_report(rep, res)
            report.save(report.influence_distance_figure(res["distance"]), out / "influence_vs_distance.png")
            summary["explain"] = explain.to_json(res)
        elif step == "loo":
            summary["loo"] = loo_section(rep, args.k, args.seed)
        elif step.startswith("mislabel"):
            ds = step.split("-")[1]
            res = mislabel.compute(ds, data_dir=args.data_dir, seed=args.seed,
                                   n_train=args.mnist_train if ds == "mnist" else None, progress=False,
                                   retrain_at=(0.0, 0.1, 0.2) if ds == "digits" else (0.0, 0.05, 0.1, 0.2, 0.3))
            mislabel.add_to_report(rep, res)
            report.save(report.mislabel_figure(res["result"], res["desc"]), out / f"mislabel_{ds}.png")
            summary[step] = mislabel.to_json(res)
        elif step == "mismatch":
            r = mismatch.compute(data_dir=args.data_dir, seed=args.seed)
            mismatch.add_to_report(rep, r)
            summary["mismatch"] = r.to_json()
    summary["seconds"] = time.perf_counter() - t0
    rep.text(f"Built in {summary['seconds']:.0f} s.", note=True)
    path = rep.write(out)
    report.write_atomic(out / "summary.json", json.dumps(summary, indent=1, default=float).encode())
    if args.json:
        print(json.dumps({"report": str(path), **summary}, default=float))
        return 0
    print(f"convention: {SIGN_CONVENTION}")
    e = summary["explain"]["influence_vs_distance"]
    print(f"influence vs distance: Spearman(|I|, dist) RBF {e['rbf']['spearman']:.3f}, MLP {e['mlp']['spearman']:.3f}")
    print(f"LOO check (digits 1 vs 7, k = {summary['loo']['k']}): Pearson R = {summary['loo']['pearson']:.4f}, "
          f"Spearman = {summary['loo']['spearman']:.4f}")
    for key in [s for s in summary if s.startswith("mislabel")]:
        at = summary[key]["found_at_10pct"]
        print(f"{key}: flipped labels found at 10% checked: self-influence {at['self_influence']:.1%}, "
              f"loss {at['loss']:.1%}, random {at['random']:.1%}")
    if "mismatch" in summary:
        m = summary["mismatch"]
        print(f"mismatch: {m['children_in_top10']} of {len(m['kept_children'])} kept children in the top 10 "
              f"(ranks {m['children_ranks']})")
    print(f"report written to {path} in {summary['seconds']:.0f} s", file=sys.stderr)
    return 0
