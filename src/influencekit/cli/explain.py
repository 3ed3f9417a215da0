"""``influencekit explain``: the most helpful and harmful training points for a few test points,
against their nearest neighbours, and influence vs distance for an RBF-kernel and a learned-feature model."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ..convention import SIGN_CONVENTION
from ..experiments import datasets, report
from ..experiments import explain as ex
from ..influence import Influence

help = "most helpful/harmful training points for test points, vs nearest neighbours; influence vs distance (Fig. 1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist"],
                   help="digits: bundled 8x8 digits 1 vs 7; mnist: MNIST 1 vs 7 (needs mnist.npz)")
    p.add_argument("--model", default="logreg", choices=["logreg", "mlp"],
                   help="logistic regression (all parameters) or a tanh MLP (influence over its last layer)")
    p.add_argument("--test-index", type=int, nargs="*", default=None,
                   help="test points to explain (default: the two highest-loss ones and one typical one)")
    p.add_argument("--k", type=int, default=5, help="how many helpful and harmful points to show")
    p.add_argument("--no-distance", action="store_true", help="skip the RBF vs MLP influence-vs-distance figure")
    p.add_argument("--l2", type=float, default=1e-2, help="L2 coefficient of the model")


def load(dataset: str, data_dir: str | None, seed: int):
    """(train, test, image side) for 1 vs 7 on the chosen data; float64 flat inputs."""
    if dataset == "digits":
        Xtr, ytr, Xte, yte = datasets.digits((1, 7), seed=seed)
        return (Xtr, ytr), (Xte, yte), 8
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes=(1, 7), flatten=True, dtype=torch.float64)
    return (Xtr, ytr), (Xte, yte), 28


def compute(dataset: str = "digits", model: str = "logreg", test_index: list[int] | None = None, k: int = 5,
            distance: bool = True, l2: float = 1e-2, data_dir: str | None = None, seed: int = 0) -> dict:
    """Explanations for a few test points (and the influence-vs-distance study): a dict with
    ``explanations`` (one per test point), ``train``/``test`` data, ``side`` and ``distance``."""
    from ..experiments.fit import fit_linear

    train, test, side = load(dataset, data_dir, seed)
    features = None
    if model == "logreg":
        m = fit_linear(*train, l2, classes=2)
        inf = Influence(m, "logistic", train, l2=l2, solver="exact")
    else:
        m, head = ex.fit_mlp(*train, l2=l2, seed=seed)
        inf = Influence(m, "cross_entropy", train, l2=l2, params=head, solver="exact")
        features = m.features
    with torch.no_grad():
        obj = inf.objective
        losses = obj.losses(obj.theta, *obj.cast(*test))
    if not test_index:
        order = losses.argsort(descending=True).tolist()
        test_index = order[:2] + [order[len(order) // 2]]
    out = []
    for j in test_index:
        e = ex.explain(inf, test[0][j:j + 1], test[1][j:j + 1], k=k, features=features)
        out.append({"test_index": j, "label": int(test[1][j]), "loss": float(losses[j]), "explanation": e})
    res = {"dataset": dataset, "model": model, "n": inf.n, "p": inf.objective.p, "side": side,
           "train": train, "test": test, "explanations": out, "convention": SIGN_CONVENTION}
    if distance:
        res["distance"] = ex.influence_vs_distance(train, test, l2=1e-3, seed=seed)
    return res


def to_json(res: dict) -> dict:
    out = {k: res[k] for k in ("dataset", "model", "n", "p", "convention")}
    out["explanations"] = [{"test_index": e["test_index"], "label": e["label"], "loss": e["loss"],
                            **e["explanation"].to_json()} for e in res["explanations"]]
    if "distance" in res:
        out["influence_vs_distance"] = ex.summary(res["distance"])
    return out


def add_to_report(rep: report.Report, res: dict) -> None:
    """Explain section: per test point, a sortable table of the helpful and harmful training
    points with thumbnails, scores and distance ranks; then the influence-vs-distance figure."""
    Xtr, ytr = res["train"]
    Xte, _ = res["test"]
    side = res["side"]
    n = res["n"]
    rep.heading(f"Explain: most helpful and harmful training points ({res['dataset']} 1 vs 7, {res['model']}, "
                f"n = {n}, p = {res['p']})")
    rep.text("Labels: 0 = digit 1, 1 = digit 7. I_up,loss > 0: harmful (up-weighting raises the test loss); < 0: "
             "helpful. Removing the point changes the test loss by about -(1/n) I_up,loss. Distance rank: position "
             "among the training points sorted by Euclidean distance to the test input (0 = nearest).", note=True)
    for item in res["explanations"]:
        e = item["explanation"]
        j = item["test_index"]
        rank_in = e.input_distance.argsort().argsort()
        rank_ft = None if e.feature_distance is None else e.feature_distance.argsort().argsort()
        cols = ["role", "train index", "image", "label", "I_up,loss", "-(1/n) I_up,loss", "input-distance rank"]
        if rank_ft is not None:
            cols.append("feature-distance rank")
        rows = []
        for role, idx in (("helpful", e.helpful), ("harmful", e.harmful)):
            for i in idx:
                row = [role, i, report.Image(report.thumbnail(Xtr[i].reshape(side, side).numpy()), f"train {i}"),
                       int(ytr[i]), float(e.up_loss[i]), float(-e.up_loss[i] / n), int(rank_in[i])]
                if rank_ft is not None:
                    row.append(int(rank_ft[i]))
                rows.append(row)
        ovl = f"top-{len(e.helpful)} |influence| among the {len(e.helpful)} nearest in input space: " \
              f"{e.overlap_input:.0%}"
        if e.overlap_feature is not None:
            ovl += f"; in feature space: {e.overlap_feature:.0%}"
        rep.table(["test image"], [[report.Image(report.thumbnail(Xte[j].reshape(side, side).numpy()),
                                                 f"test {j}")]],
                  caption=f"test point {j}: label {item['label']}, test loss {item['loss']:.3g}")
        rep.table(cols, rows, caption=f"test point {j}: {ovl}")
    if "distance" in res:
        d = res["distance"]
        rep.heading("Influence vs Euclidean distance: RBF-kernel model vs learned features (paper Fig. 1)")
        rep.figure(report.influence_distance_figure(d),
                   f"test point {d['test_index']}: for the RBF-kernel model the influential points are the near ones "
                   f"(Spearman(|I|, distance) = {d['rbf']['spearman']:.2f}, top-10 overlap with 10-NN "
                   f"{d['rbf']['overlap']:.0%}); for the MLP they are not (Spearman {d['mlp']['spearman']:.2f}, "
                   f"overlap {d['mlp']['overlap']:.0%}).")


def run(args: argparse.Namespace) -> int:
    res = compute(args.dataset, args.model, args.test_index, args.k, not args.no_distance, args.l2,
                  args.data_dir, args.seed)
    if args.out:
        rep = report.Report("influencekit explain")
        add_to_report(rep, res)
        path = rep.write(args.out)
        if "distance" in res:
            report.save(report.influence_distance_figure(res["distance"]), f"{args.out}/influence_vs_distance.png")
        print(f"report written to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(res)))
        return 0
    print(f"{res['dataset']} 1 vs 7, {res['model']}: n = {res['n']}, p = {res['p']}")
    print(f"convention: {SIGN_CONVENTION}")
    for item in res["explanations"]:
        e = item["explanation"]
        print(f"test point {item['test_index']} (label {item['label']}, loss {item['loss']:.3g}):")
        for role, idx in (("helpful", e.helpful), ("harmful", e.harmful)):
            print(f"  most {role}: " + ", ".join(f"{i} ({float(e.up_loss[i]):+.3g})" for i in idx))
        print(f"  overlap of top-k |influence| with k nearest: input {e.overlap_input:.0%}"
              + ("" if e.overlap_feature is None else f", feature space {e.overlap_feature:.0%}"))
    if "distance" in res:
        s = ex.summary(res["distance"])
        for m in ("rbf", "mlp"):
            print(f"influence vs distance, {m}: Spearman(|I_up,loss|, distance) = {s[m]['spearman']:.3f}, "
                  f"top-10 overlap with 10-NN = {s[m]['overlap']:.0%}")
    return 0

