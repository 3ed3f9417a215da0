"""``influencekit mislabel``: flip 10% of the training labels, rank by |self-influence|, training loss
and at random, and report how many flips each finds and the test accuracy after fixing them (paper Sec. 5.4)."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .. import fingerprint
from ..convention import SIGN_CONVENTION
from ..errors import InputError
from ..experiments import datasets, report
from ..experiments import mislabel as ml

help = "find flipped labels by self-influence vs training loss vs random; test accuracy after fixing (Sec. 5.4)"

#: default L2 per data set: the decade-grid value (1e-6 .. 1e-2) with the best validation accuracy on
#: a held-out 20% of the noisy training split (mnist: 1 vs 7, 5000 points; mnist_all: 10 classes, 5000
#: points, validation 0.809 at 1e-2 vs 0.784 / 0.711 at 1e-3 / 1e-4; enron: ``ENRON``).
#: Which ranking wins depends on it: benchmarks/uses/mislabel_sweep.py, numbers in benchmarks/uses/RESULTS.md
L2 = {"digits": 1e-3, "mnist": 1e-2, "mnist_all": 1e-2}

#: Enron1 set-ups (``--setup``). "paper" (default): the one of Koh & Liang's reference release for this
#: experiment (scripts/load_spam.py, run_spam_experiment.py): raw word counts of the words in >= 5
#: training emails, weight decay 1e-4 through scikit-learn's C = 1 / (n weight_decay), i.e.
#: (1/n) sum L + (1e-4 / 2)||w||^2 (their words are spaCy lemmas; ours are the words as written, as
#: spaCy's model is a download). "validated": log1p counts of the words in >= 2 emails and the L2
#: with the best validation accuracy on the decade grid; a half-decade grid prefers 3e-3 there, where
#: training loss beats self-influence (benchmarks/uses/RESULTS.md).
ENRON = {"paper": {"counts": "raw", "min_df": 5, "l2": 1e-4}, "validated": {"counts": "log1p", "min_df": 2, "l2": 1e-3}}

#: ``--model mlp`` (network path, ``uses.mislabel.run_net``; MNIST: all 10 classes, float32): the recipe
#: with the best validation accuracy on a held-out 20% of the noisy training split among those in
#: benchmarks/uses/mislabel_net_sweep.py (MNIST, 3000 points). It fits few flipped labels, and training
#: loss beats self-influence there (numbers in benchmarks/uses/RESULTS.md).
MLP_RECIPE = {"hidden": (32,), "epochs": 30, "l2": 1e-4, "lr": 1e-3}

#: ``--model cnn`` (MNIST only, all 10 classes): ``models.SmallCNN`` (11,978 parameters), chosen by the
#: same rule among the CNN recipes of mislabel_net_sweep.py (validation 0.8367 at 30 epochs, l2 1e-3).
CNN_RECIPE = {"arch": "cnn", "epochs": 30, "l2": 1e-3, "lr": 1e-3}
NETS = {"mlp": MLP_RECIPE, "cnn": CNN_RECIPE}
#: default MNIST subset of the network paths: their recipes were chosen on 3,000 images, and every
#: refit retrains the network (all 60,000 images: ~45 min per flip seed for the CNN on one core).
NET_N_TRAIN = 3000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "enron", "mnist"],
                   help="digits: bundled, 10-class multinomial regression; enron: Enron1 bag of words (needs "
                        "enron1.tar.gz); mnist: MNIST 1 vs 7 logistic regression (needs mnist.npz)")
    p.add_argument("--fraction", type=float, default=0.1, help="fraction of training labels to flip")
    p.add_argument("--l2", type=float, default=None, help="L2 coefficient (default per data set)")
    p.add_argument("--setup", default="paper", choices=list(ENRON),
                   help="enron: paper (default; raw counts, words in >= 5 emails, l2 1e-4, as the paper's code) or "
                        "validated (log1p counts, words in >= 2 emails, l2 1e-3 by validation)")
    p.add_argument("--vocabulary", type=int, default=0,
                   help="enron: vocabulary size (= p - 1); 0 (default): every word the set-up's min_df admits")
    p.add_argument("--repeats", type=int, default=1,
                   help="repeat with this many flip seeds (seed, seed + 1, ...) and report means +- s.d. "
                        "(the paper averages 40)")
    p.add_argument("--classes", default=None, choices=["1v7", "all"],
                   help="mnist: digits 1 vs 7 (default for the linear model: logistic regression) or all 10 "
                        "(default for --model mlp; linear: multinomial regression, p = 7,850)")
    p.add_argument("--n-train", type=int, default=None,
                   help=f"mnist: random training subset size (default: all for the linear model, {NET_N_TRAIN} for "
                        "mlp / cnn, the size their recipes were chosen at; 0: all)")
    p.add_argument("--model", default="linear", choices=["linear", *NETS],
                   help="linear (default): logistic / multinomial regression, exact self-influence; mlp: a tanh "
                        "MLP (784-32-10 on MNIST, all 10 classes) trained with Adam, EK-FAC self-influence; cnn "
                        "(MNIST only): a small tanh CNN (conv 8-16, 32 hidden), the same way")


def load(dataset: str, data_dir: str | None, seed: int, vocabulary: int | None = None,
         n_train: int | None = None, model: str = "linear", setup: str = "paper", classes: str | None = None) -> dict:
    """train/test tensors plus what the report shows of a training point (image side or text)."""
    dtype = torch.float32 if model in NETS else torch.float64
    if dataset == "digits":
        Xtr, ytr, Xte, yte = datasets.digits(None, seed=seed, dtype=dtype)
        return {"train": (Xtr, ytr), "test": (Xte, yte), "side": 8, "desc": "scikit-learn digits, 10 classes, "
                "multinomial logistic regression"}
    if dataset == "mnist":
        ten = (classes or ("all" if model in NETS else "1v7")) == "all"
        Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes=None if ten else (1, 7), flatten=model != "cnn",
                                            dtype=dtype)  # the CNN takes images [n, 1, 28, 28]
        n_train = (NET_N_TRAIN if model in NETS else 0) if n_train is None else n_train
        if n_train and n_train < len(Xtr):
            idx = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(seed))[:n_train].sort().values
            Xtr, ytr = Xtr[idx], ytr[idx]
        kind = "" if model in NETS else (", multinomial regression" if ten else ", logistic regression")
        return {"train": (Xtr, ytr), "test": (Xte, yte), "side": 28, "classes": "all" if ten else "1v7",
                "desc": ("MNIST 10 classes" if ten else "MNIST 1 vs 7") + kind}
    docs, labels = datasets.enron(data_dir)
    feats = ENRON[setup]
    Xtr, ytr, Xte, yte, vocab = ml.enron_features(docs, labels, max_features=vocabulary or None, seed=seed,
                                                  counts=feats["counts"], min_df=feats["min_df"])
    train_docs = [docs[i] for i in ml.enron_split(len(docs), seed=seed)[0]]  # the rows of Xtr
    return {"train": (Xtr, ytr), "test": (Xte, yte), "docs": train_docs,
            "desc": f"Enron1 spam, bag of words ({len(vocab)} words, {feats['counts']} counts), logistic regression"}


def compute(dataset: str = "digits", fraction: float = 0.1, l2: float | None = None, data_dir: str | None = None,
            seed: int = 0, vocabulary: int | None = None, n_train: int | None = None, progress: bool = True,
            retrain_at: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3), model: str = "linear",
            setup: str = "paper", repeats: int = 1, classes: str | None = None, cache: str | None = None) -> dict:
    """The experiment on one data set; with ``repeats`` > 1 it is repeated with the flip seeds
    seed, seed + 1, ... on the same data (split / subset of ``seed``) and ``result`` holds the means
    (``uses.mislabel.aggregate``). ``cache``: a folder where each flip seed's result is stored as it
    finishes (``uses.mislabel.save_result``) and read back by a later call with the same settings and
    data, so an interrupted run resumes (the command passes ``--out DIR/mislabel_runs``)."""
    if model in NETS and dataset == "enron":
        raise InputError(f"--model {model} takes image data (digits, mnist); enron uses the linear model.")
    if model == "cnn" and dataset != "mnist":
        raise InputError("--model cnn takes MNIST's 28 x 28 images (--dataset mnist); digits are 8 x 8: use mlp.")
    if setup not in ENRON:
        raise InputError(f"setup must be one of {list(ENRON)}, got {setup!r}.")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1 (the number of flip seeds), got {repeats}.")
    data = load(dataset, data_dir, seed, vocabulary, n_train, model, setup, classes)
    seeds = [seed + k for k in range(repeats)]
    if model in NETS:
        recipe = NETS[model] | ({} if l2 is None else {"l2": l2})
        one = partial(ml.run_net, data["train"], data["test"], fraction=fraction, progress=progress,
                      retrain_at=retrain_at, validate=True, **recipe)
        l2 = recipe["l2"]
    else:
        key = "mnist_all" if data.get("classes") == "all" else dataset
        recipe = {}
        l2 = (ENRON[setup]["l2"] if dataset == "enron" else L2[key]) if l2 is None else l2
        one = partial(ml.run, data["train"], data["test"], l2=l2, fraction=fraction, progress=progress,
                      retrain_at=retrain_at)
    settings = {"dataset": dataset, "model": model, "recipe": recipe, "l2": l2, "fraction": fraction,
                "setup": setup, "vocabulary": vocabulary, "classes": data.get("classes"), "data_seed": seed,
                "n": len(data["train"][1]),
                "retrain_at": list(retrain_at)}
    runs = [_resumable(one, s, settings, data["train"], cache) for s in seeds]
    desc = f"{data['desc']}, {runs[0].model}, EK-FAC self-influence" if model in NETS else data["desc"]
    r = runs[0] if repeats == 1 else ml.aggregate(runs, seeds)
    return {**data, "desc": desc, "dataset": dataset, "l2": l2, "model": model, "result": r,
            "setup": setup if dataset == "enron" else None}


def _resumable(one, seed: int, settings: dict, train: tuple, cache: str | None) -> ml.MislabelResult:
    """``one(seed=seed)``, or its stored result from an earlier call with the same settings and data."""
    if cache is None:
        return one(seed=seed)
    tag = fingerprint.sha256(json.dumps(fingerprint.jsonable(settings), sort_keys=True).encode())[:12]
    path = Path(cache) / f"{settings['dataset']}_{settings['model']}_{tag}_flips{seed}"
    meta = settings | {"flip_seed": seed, "data": fingerprint.fingerprint_data(train)}
    r = ml.load_result(path, meta)
    if r is None:
        r = one(seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        ml.save_result(path, r, meta)
    return r


def to_json(res: dict) -> dict:
    return {"dataset": res["dataset"], "description": res["desc"], "l2": res["l2"], "setup": res["setup"],
            **res["result"].to_json()}


def add_to_report(rep: report.Report, res: dict, top: int = 15) -> None:
    """Mislabel section: detection and recovered-accuracy figure, numbers at 10% checked, and a
    sortable table of the points self-influence asks to check first."""
    r = res["result"]
    at = r.at(0.1)
    rep.heading(f"Mislabel detection: {res['desc']} (n = {r.n}, p = {r.p}, {r.n_flipped} labels flipped)")
    over = f" (means over {len(r.repeats)} flip seeds)" if r.repeats else ""
    rep.figure(report.mislabel_figure(r, res["desc"]),
               f"flipped labels found at 10% checked{over}: self-influence {at['self_influence']:.0%}, training loss "
               f"{at['loss']:.0%}, random {at['random']:.0%}. Test accuracy: clean {r.clean_accuracy:.3f}, with "
               f"flipped labels {r.noisy_accuracy:.3f}.")
    i10 = int(np.argmin(np.abs(r.retrain_at - 0.1)))
    cols = ["ranking", "flipped found at 10% checked", "test accuracy after fixing 10%"]
    rows = [[k, float(at[k]), float(r.accuracy[k][i10])] for k in r.found]
    if r.repeats:  # the spread over flip seeds, and how often each ranking beat the others
        sd = r.at(0.1, r.found_std)
        wins = {k: sum(one["found_at_10pct"][k] > max(v for j, v in one["found_at_10pct"].items() if j != k)
                       for one in r.repeats) for k in r.found}
        cols += ["s.d. of found", "s.d. of accuracy", f"seeds where it finds the most (of {len(r.repeats)})"]
        rows = [row + [sd[k], float(r.accuracy_std[k][i10]), wins[k]] for row, k in zip(rows, r.found)]
    rep.table(cols, rows)
    Xtr, ytr = res["train"]
    cols = ["check order", "train index", "shown", "given label", "true label", "flipped",
            "self-influence I_up,loss(z,z)", "training loss"]
    flipped = set(r.flipped.tolist())
    rows = []
    for pos, i in enumerate(r.order["self_influence"][:top].tolist()):  # first flip seed's run
        if "side" in res:
            shown = report.Image(report.thumbnail(Xtr[i].reshape(res["side"], res["side"]).numpy()), f"train {i}")
        else:
            shown = " ".join(res["docs"][i].split())[:200]
        rows.append([pos, i, shown, int(r.noisy[i]), int(ytr[i]), i in flipped, float(r.self_influence[i]),
                     float(r.losses[i])])
    rep.text("Self-influence I_up,loss(z_i, z_i) = -g^T H^-1 g is <= 0; the points with the largest magnitude are "
             "checked first.", note=True)
    rep.table(cols, rows, caption=f"the {top} training points to check first by |self-influence|")


def run(args: argparse.Namespace) -> int:
    res = compute(args.dataset, args.fraction, args.l2, args.data_dir, args.seed, args.vocabulary, args.n_train,
                  progress=not args.json, model=args.model, setup=args.setup, repeats=args.repeats,
                  classes=args.classes, cache=str(Path(args.out) / "mislabel_runs") if args.out else None)
    r = res["result"]
    if args.out:
        rep = report.Report("influencekit mislabel")
        add_to_report(rep, res)
        path = rep.write(args.out)
        report.save(report.mislabel_figure(r, res["desc"]), f"{args.out}/mislabel_{args.dataset}.png")
        print(f"report written to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(res)))
        return 0
    print(f"{res['desc']}: n = {r.n}, p = {r.p}, {r.n_flipped} labels flipped, l2 = {res['l2']}"
          + (f", set-up {res['setup']}" if res["setup"] else ""))
    if r.repeats:
        print(f"means over {len(r.repeats)} flip seeds; found at 10% checked, mean +- s.d.: " + ", ".join(
            f"{k} {v:.1%} +- {r.at(0.1, r.found_std)[k]:.1%}" for k, v in r.at(0.1).items()))
    print(f"convention: {SIGN_CONVENTION}")
    print("self-influence is <= 0; ranked by its magnitude, largest first")
    print(f"{'ranking':>15} {'found@5%':>9} {'found@10%':>10} {'found@20%':>10}   test accuracy after fixing "
          + " / ".join(f"{f:.0%}" for f in r.retrain_at))
    for k in r.found:
        print(f"{k:>15} {r.at(0.05)[k]:>9.1%} {r.at(0.1)[k]:>10.1%} {r.at(0.2)[k]:>10.1%}   "
              + " / ".join(f"{a:.3f}" for a in r.accuracy[k]))
    print(f"test accuracy: clean labels {r.clean_accuracy:.3f}, flipped {r.noisy_accuracy:.3f}")
    return 0
