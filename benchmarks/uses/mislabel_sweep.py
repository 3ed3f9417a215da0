"""Mislabel detection (paper Sec. 5.4): sweep of features and L2 for Enron1 and MNIST 1 vs 7.

    OMP_NUM_THREADS=1 python benchmarks/uses/mislabel_sweep.py [--only enron mnist] [--data-dir DIR]
        [--l2 ...] [--seeds ...] [--settings log1p:all:2 ...] [--mnist-n 1000 5000 0] [--tag _seeds]

For each setting: flip 10% of the training labels (``uses.mislabel.flip_labels``, seed 0), fit
L2-regularised logistic regression (bias included and regularised, as in ``uses.fit``) to
max|grad| < 1e-8, and count the flipped labels among the first 10% checked by |self-influence|,
by training loss and at random (the same random order as ``uses.mislabel.rank``). Also the
validation accuracy (a 20% hold-out of the noisy training split, fitted on the other 80%) that
picks the L2 per feature setting, and the clean / noisy test accuracy.

This is a fast stand-alone computation for linear models only (sparse features, closed-form
leverage): self-influence of point i = -(sigma_i - y_i)^2 x_i^T H^-1 x_i with
H = X^T D X / n + l2 I, through a p x p Cholesky when p <= n, else through the n x n dual
(Woodbury). The chosen settings are re-run with the library (``run_all.py --only enron mnist``).
Writes ``mislabel_sweep.json`` next to this file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize
from scipy.sparse.linalg import LinearOperator, cg
from scipy.special import expit

from influencekit.experiments import datasets
from influencekit.experiments import mislabel as ml

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)


def with_bias(X):
    ones = np.ones((X.shape[0], 1))
    return sp.hstack([X, ones], format="csr") if sp.issparse(X) else np.hstack([X, ones])


def fit(X, y, l2, theta0=None):
    """argmin mean log(1 + exp(-s x^T theta)) + l2/2 |theta|^2 (X with the bias column): theta, max|grad|."""
    n, p = X.shape
    s = 2.0 * y - 1.0

    def f(th):
        z = X @ th
        loss = np.logaddexp(0, -s * z).mean() + 0.5 * l2 * th @ th
        g = X.T @ (expit(z) - y) / n + l2 * th
        return loss, g

    th = np.zeros(p) if theta0 is None else theta0.copy()
    th = minimize(f, th, jac=True, method="L-BFGS-B", options={"maxiter": 20000, "gtol": 1e-10, "ftol": 0,
                                                                "maxcor": 30}).x
    for _ in range(20):  # Newton-CG polish (convex: full steps from near the optimum)
        _, g = f(th)
        if np.abs(g).max() < 1e-10:
            break
        sig = expit(X @ th)
        d = sig * (1 - sig) / n
        H = LinearOperator((p, p), matvec=lambda v, d=d: X.T @ (d * (X @ v)) + l2 * v, dtype=np.float64)
        step, _ = cg(H, -g, rtol=1e-12, maxiter=2000)
        th = th + step
    _, g = f(th)
    return th, float(np.abs(g).max())


def leverage(X, d, l2):
    """x_i^T (X^T diag(d) X + l2 I)^{-1} x_i for every row i (d already divided by n)."""
    n, p = X.shape
    if p <= n:
        Xd = X.toarray() if sp.issparse(X) else X
        H = Xd.T @ (d[:, None] * Xd) + l2 * np.eye(p)
        c = cho_factor(H)
        return np.einsum("ij,ji->i", Xd, cho_solve(c, Xd.T))
    # dual: H^-1 = (1/l2) (I - X^T S (l2 I + S K S)^-1 S X), S = diag(sqrt(d)), K = X X^T
    K = X @ X.T
    K = K.toarray() if sp.issparse(K) else K
    sd = np.sqrt(d)
    M = l2 * np.eye(n) + sd[:, None] * K * sd[None, :]
    L = np.linalg.cholesky(M)
    B = solve_triangular(L, sd[:, None] * K, lower=True)  # L^-1 S K
    return (np.diag(K) - (B * B).sum(0)) / l2


def evaluate(Xtr, ytr, Xte, yte, l2, noisy, flipped, seed=0):
    n = len(ytr)
    t = time.perf_counter()
    # validation accuracy for choosing l2: hold out 20% of the (noisy) training split
    rng = np.random.default_rng(7)  # the same hold-out for every setting
    perm = rng.permutation(n)
    va, tr = perm[: n // 5], perm[n // 5:]
    thv, _ = fit(Xtr[tr], noisy[tr], l2)
    val_acc = float(((Xtr[va] @ thv > 0) == noisy[va]).mean())
    th_clean, _ = fit(Xtr, ytr, l2)
    th, gmax = fit(Xtr, noisy, l2)
    z = Xtr @ th
    sig = expit(z)
    losses = np.logaddexp(0, -(2.0 * noisy - 1) * z)
    lev = leverage(Xtr, sig * (1 - sig) / n, l2)
    self_inf = -((sig - noisy) ** 2) * lev
    orders = {"self_influence": np.argsort(-np.abs(self_inf), kind="stable"),
              "loss": np.argsort(-losses, kind="stable"),
              "random": torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).numpy()}
    hit = np.zeros(n, bool)
    hit[flipped] = True
    k = int(round(0.1 * n))
    found = {name: float(hit[o[:k]].mean() * k / len(flipped)) for name, o in orders.items()}
    return {"l2": l2, "val_acc": val_acc, "clean_acc": float(((Xte @ th_clean > 0) == yte).mean()),
            "noisy_acc": float(((Xte @ th > 0) == yte).mean()), "max_grad": gmax,
            "train_acc_noisy": float(((z > 0) == noisy).mean()),
            "flipped_fitted": float(((z[flipped] > 0) == noisy[flipped]).mean()),
            "found_at_10pct": found, "seconds": time.perf_counter() - t}


def enron_settings(only=None):
    if only:  # "features:vocabulary:min_df", vocabulary "all" = every word
        for spec in only:
            feats, vocab, min_df = spec.split(":")
            yield feats, None if vocab == "all" else int(vocab), int(min_df)
        return
    for feats in ("log1p", "binary", "tfidf", "count"):
        for vocab in (1000, 3000, 5000, None):
            if feats in ("tfidf", "count") and vocab not in (1000, None):
                continue
            yield feats, vocab, 2
    yield "log1p", None, 5
    yield "binary", None, 5


def enron_matrices(docs, labels, feats, vocab, min_df, seed=0):
    from sklearn.feature_extraction.text import TfidfTransformer

    tr, te = ml.enron_split(len(docs), seed=seed)  # the split and words of ml.enron_features
    vec = ml.enron_vectorizer(vocab, min_df)
    Ctr = vec.fit_transform([docs[i] for i in tr]).astype(np.float64)
    Cte = vec.transform([docs[i] for i in te]).astype(np.float64)
    if feats == "log1p":
        Ctr.data, Cte.data = np.log1p(Ctr.data), np.log1p(Cte.data)
    elif feats == "binary":
        Ctr.data[:], Cte.data[:] = 1.0, 1.0
    elif feats == "tfidf":
        tf = TfidfTransformer().fit(Ctr)
        Ctr, Cte = tf.transform(Ctr), tf.transform(Cte)
    return with_bias(Ctr.tocsr()), labels[tr].astype(float), with_bias(Cte.tocsr()), labels[te].astype(float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", nargs="*", default=["enron", "mnist"])
    ap.add_argument("--l2", nargs="*", type=float, default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help="label-flip seeds (random order: seed + 1)")
    ap.add_argument("--settings", nargs="*", default=None, help="enron: features:vocabulary:min_df, e.g. log1p:all:2")
    ap.add_argument("--mnist-n", nargs="*", type=int, default=[1000, 5000, 0], help="0 = all 13,007")
    ap.add_argument("--tag", default="", help="store the rows under enron<tag> / mnist<tag> in the json")
    args = ap.parse_args()
    out_path = HERE / "mislabel_sweep.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    if "enron" in args.only:
        docs, labels = datasets.enron(args.data_dir)
        rows = []
        for (feats, vocab, min_df), seed in itertools.product(enron_settings(args.settings), args.seeds):
            Xtr, ytr, Xte, yte = enron_matrices(docs, labels, feats, vocab, min_df)
            noisy_t, flipped_t = ml.flip_labels(torch.as_tensor(ytr).long(), 0.1, seed=seed)
            noisy, flipped = noisy_t.numpy().astype(float), flipped_t.numpy()
            for l2 in args.l2:
                r = evaluate(Xtr, ytr, Xte, yte, l2, noisy, flipped, seed)
                r |= {"features": feats, "vocabulary": vocab, "min_df": min_df, "p": Xtr.shape[1], "n": len(ytr),
                      "seed": seed}
                rows.append(r)
                f = r["found_at_10pct"]
                print(f"enron seed {seed} {feats:>6} vocab {str(vocab):>5} min_df {min_df} p {r['p']:>6} l2 {l2:.0e}: "
                      f"val {r['val_acc']:.4f} test clean/noisy {r['clean_acc']:.4f}/{r['noisy_acc']:.4f} "
                      f"flips fitted {r['flipped_fitted']:.2f} | self-inf {f['self_influence']:.3f} loss "
                      f"{f['loss']:.3f} random {f['random']:.3f} | grad {r['max_grad']:.0e} {r['seconds']:.0f}s",
                      flush=True)
        out["enron" + args.tag] = rows
        out_path.write_text(json.dumps(out, indent=1))
    if "mnist" in args.only:
        Xa, ya, Xte_t, yte_t = datasets.mnist(args.data_dir, classes=(1, 7), flatten=True, dtype=torch.float64)
        Xte, yte = with_bias(Xte_t.numpy()), yte_t.numpy().astype(float)
        rows = []
        for n_train, seed in itertools.product(args.mnist_n, args.seeds):
            Xtr_t, ytr_t = Xa, ya
            if n_train:  # the subset of commands.mislabel.load (seed 0)
                idx = torch.randperm(len(Xa), generator=torch.Generator().manual_seed(0))[:n_train].sort().values
                Xtr_t, ytr_t = Xa[idx], ya[idx]
            noisy_t, flipped_t = ml.flip_labels(ytr_t, 0.1, seed=seed)
            Xtr, ytr = with_bias(Xtr_t.numpy()), ytr_t.numpy().astype(float)
            noisy, flipped = noisy_t.numpy().astype(float), flipped_t.numpy()
            for l2 in args.l2:
                r = evaluate(Xtr, ytr, Xte, yte, l2, noisy, flipped, seed)
                r |= {"n_train": n_train or len(ytr), "p": Xtr.shape[1], "n": len(ytr), "seed": seed}
                rows.append(r)
                f = r["found_at_10pct"]
                print(f"mnist 1v7 seed {seed} n {r['n']:>5} l2 {l2:.0e}: val {r['val_acc']:.4f} test clean/noisy "
                      f"{r['clean_acc']:.4f}/{r['noisy_acc']:.4f} flips fitted {r['flipped_fitted']:.2f} | self-inf "
                      f"{f['self_influence']:.3f} loss {f['loss']:.3f} random {f['random']:.3f} | grad "
                      f"{r['max_grad']:.0e} {r['seconds']:.0f}s", flush=True)
        out["mnist" + args.tag] = rows
        out_path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
