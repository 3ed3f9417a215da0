"""Peer comparison: the same model and data through influencekit and kronfluence, pyDVL, captum,
dattri, in one run; seconds, peak memory and agreement with exact influence per method.

    python benchmarks/peers/run.py --model mlp          # MLP 64-64-32-10 (6,570 params) on digits
    python benchmarks/peers/run.py --model mlp-small    # MLP 64-32-10 (2,410 params) on digits
    python benchmarks/peers/run.py --model cnn          # SmallCNN (11,978 params) on digits at 28x28
    python benchmarks/peers/run.py --model mlp --only ik:cg,kronfluence:ekfac
    python benchmarks/peers/run.py --model mlp --only ik:cg@1e-2     # CG to relative residual 1e-2
    python benchmarks/peers/run.py --model mlp --only ik:ekfac@textbook   # EK-FAC as published
    python benchmarks/peers/run.py --model mlp --seed 1 --damping 0.05   # another network, another damping
    python benchmarks/peers/run.py --model cnn --reference ik:cg64   # float64 CG reference

Every method runs in its own subprocess (peak memory = that process's ru_maxrss; time = its
curvature fit + inverse-HVP + scoring of the [m, n] matrix, model and data loading and the
library's import excluded, after one warm-up call on 64 training points: see ``child``).
The reference is influencekit's exact solver: explicit float64 Hessian of
R = (1/n) sum L + (l2/2)||theta||^2, damped by d (``--reference ik:cg64``: the same system solved
by float64 CG to relative residual 1e-12, for models whose explicit Hessian does not fit the
machine's time; checked against exact on the MLP, see RESULTS.md); every peer gets the same total damping
(l2 + d) on the Hessian of its mean training loss, so all target (H_loss + (l2 + d) I)^-1.

Signs of the report: ``influencekit.convention``. Peers use other conventions (some return g^T H^-1 g, positive =
helpful); each peer matrix is multiplied by the sign that its documentation implies, listed in
SIGNS, and the report also prints the raw Pearson so a wrong sign cannot hide.
Each method run (not one resumed from the work folder) is recorded in benchmarks/peers/run.json under
"NETWORK METHOD" (NETWORK = the model plus any --seed/--damping suffix, e.g. "mlp-seed1-d0.05 ik:ekfac").
Peer packages are optional (installed with pip --no-deps, see RESULTS.md); a missing one is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

L2 = 1e-3
DAMPING = DEFAULT_DAMPING = 2e-2  # less leaves the damped MLP Hessian slightly indefinite
M_TEST = 20

#: multiply a peer's returned matrix by this to get I_up,loss (> 0 harmful)
#: (pyDVL's mode="up" and kronfluence return -I_up,loss: positive = helpful; checked by pearson_raw < 0)
SIGNS = {"ik": 1.0, "kronfluence": -1.0, "pydvl": -1.0, "dattri": -1.0, "captum": -1.0}

REFERENCES = ("ik:exact", "ik:cg64")
METHODS = [  # most informative first, so a run cut short still answers the targets
    "ik:exact", "ik:cg64", "ik:ekfac", "ik:pcg", "ik:kfac", "ik:ekfac@textbook", "ik:kfac@textbook", "ik:arnoldi",
    "ik:cg", "ik:cg@1e-2",
    "kronfluence:ekfac", "kronfluence:kfac", "pydvl:ekfac", "dattri:ekfac",
    "pydvl:cg", "dattri:cg", "captum:arnoldi", "pydvl:arnoldi", "dattri:arnoldi", "ik:lissa",
    "pydvl:lissa", "dattri:lissa", "pydvl:direct", "dattri:explicit",
]


def set_damping(d: float) -> None:
    """--damping: every method (and the reference) reads the module's DAMPING."""
    global DAMPING
    DAMPING = d


# ---- the workload -------------------------------------------------------------------------
def make_model(kind: str, seed: int = 0) -> nn.Module:
    from influencekit.experiments.models import MLP, SmallCNN

    torch.manual_seed(seed)
    if kind == "mlp-small":  # 2,410 params: an exact reference that fits a busy shared CPU
        return MLP(64, (32,))
    return MLP(64, (64, 32)) if kind == "mlp" else SmallCNN()


def prepare(kind: str, work: Path, seed: int = 0) -> dict:
    """Train the model on digits (10 classes; initialisation and batch order from ``seed``) and
    save model + data as safetensors."""
    from influencekit.experiments.datasets import digits
    from influencekit.experiments.models import train

    Xtr, ytr, Xte, yte = digits(classes=None, dtype=torch.float32)
    if kind == "cnn":  # 8x8 digits upsampled to the 28x28 the SmallCNN takes
        up = lambda X: F.interpolate(X.reshape(-1, 1, 8, 8), size=(28, 28), mode="bilinear")  # noqa: E731
        Xtr, Xte = up(Xtr), up(Xte)
    model = make_model(kind, seed)
    t = time.perf_counter()
    model = train(model, "cross_entropy", Xtr, ytr, l2=L2, epochs=40 if kind == "cnn" else 100,
                  batch_size=128, lr=3e-3, seed=seed)
    secs = time.perf_counter() - t
    acc = (model(Xte).argmax(1) == yte).float().mean().item()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, work / "model.safetensors")
    save_file({"Xtr": Xtr.contiguous(), "ytr": ytr, "Xte": Xte[:M_TEST].contiguous(), "yte": yte[:M_TEST]},
              work / "data.safetensors")
    p = sum(v.numel() for v in model.parameters())
    info = {"model": kind, "seed": seed, "params": p, "n": len(ytr), "m": M_TEST, "train_seconds": secs,
            "test_accuracy": acc}
    (work / "info.json").write_text(json.dumps(info))
    return info


def load(kind: str, work: Path):
    model = make_model(kind)
    model.load_state_dict(load_file(work / "model.safetensors"))
    d = load_file(work / "data.safetensors")
    return model.eval(), d["Xtr"], d["ytr"], d["Xte"], d["yte"]


# ---- one method per subprocess -------------------------------------------------------------
def run_ik(solver: str, model, Xtr, ytr, Xte, yte) -> torch.Tensor:
    from influencekit import Influence

    opts: dict = {}
    dtype = torch.float64 if solver in ("exact", "cg64") else torch.float32
    solver, _, knob = solver.partition("@")  # "cg@1e-2": CG to relative residual 1e-2
    if knob == "textbook":  # K-FAC / EK-FAC as published: every layer factorised, EK-FAC's diagonal
        opts = {"exact_block": 0, **({"row_bases": 0} if solver == "ekfac" else {})}
    elif solver == "cg64":
        solver, opts = "cg", {"tol": 1e-12, "max_iter": 20_000}
    elif solver == "cg":
        opts = {"tol": float(knob or 1e-5)}
    elif solver == "lissa":
        opts = {"depth": 300, "repeats": 1}  # its mini-batch is LiSSA's default (Influence owns batch_size)
    elif solver == "arnoldi":
        opts = {"rank": 200}
    # HVP batches of 28x28 conv activations x k tangents: smaller batches keep CG's peak memory low
    batch = 256 if Xtr.dim() > 2 else 2048
    inf = Influence(model, "cross_entropy", (Xtr, ytr), l2=L2, solver=solver, damping=DAMPING, batch_size=batch,
                    dtype=dtype, **opts)
    return inf.up_loss((Xte, yte))


def _mean_ce(out, y):
    return F.cross_entropy(out, y)


def run_kronfluence(strategy: str, model, Xtr, ytr, Xte, yte) -> torch.Tensor:
    import logging

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    logging.disable(logging.WARNING)

    class Classify(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if sample:  # true Fisher: labels sampled from the model
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return F.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="sum")

    task = Classify()
    model = prepare_model(model, task)
    out = Path(os.environ["PEER_WORK"]) / "kronfluence"
    an = Analyzer(analysis_name=f"bench_{strategy}", model=model, task=task, output_dir=str(out),
                  disable_tqdm=True, cpu=True)
    an.fit_all_factors(factors_name=strategy, dataset=TensorDataset(Xtr, ytr), per_device_batch_size=512,
                       factor_args=FactorArguments(strategy=strategy), overwrite_output_dir=True)
    an.compute_pairwise_scores(scores_name=f"s_{strategy}", factors_name=strategy,
                               query_dataset=TensorDataset(Xte, yte), train_dataset=TensorDataset(Xtr, ytr),
                               per_device_query_batch_size=M_TEST, per_device_train_batch_size=512,
                               score_args=ScoreArguments(damping_factor=L2 + DAMPING), overwrite_output_dir=True)
    return an.load_pairwise_scores(f"s_{strategy}")["all_modules"]


def run_pydvl(method: str, model, Xtr, ytr, Xte, yte) -> torch.Tensor:
    from pydvl.influence.torch import ArnoldiInfluence, CgInfluence, DirectInfluence, EkfacInfluence, LissaInfluence

    reg = L2 + DAMPING
    m = {"direct": lambda: DirectInfluence(model, _mean_ce, regularization=reg),
         "cg": lambda: CgInfluence(model, _mean_ce, regularization=reg, rtol=1e-5, maxiter=200),
         "lissa": lambda: LissaInfluence(model, _mean_ce, regularization=reg, maxiter=300, scale=20.0),
         "arnoldi": lambda: ArnoldiInfluence(model, _mean_ce, regularization=reg, rank=200),
         "ekfac": lambda: EkfacInfluence(model, update_diagonal=True, hessian_regularization=reg)}[method]()
    m = m.fit(DataLoader(TensorDataset(Xtr, ytr), batch_size=len(ytr) if method != "ekfac" else 512))
    return m.influences(Xte, yte, Xtr, ytr)


def run_dattri(method: str, model, Xtr, ytr, Xte, yte) -> torch.Tensor:
    from dattri.algorithm import influence_function as dif
    from dattri.task import AttributionTask
    from torch.func import functional_call

    def loss_func(params, data):
        x, y = data
        return F.cross_entropy(functional_call(model, params, x), y)

    reg = L2 + DAMPING
    ckpt = {k: v.detach().clone() for k, v in model.state_dict().items()}
    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=ckpt)
    att = {"explicit": lambda: dif.IFAttributorExplicit(task=task, regularization=reg),
           "cg": lambda: dif.IFAttributorCG(task=task, regularization=reg, max_iter=50, tol=1e-7),
           "lissa": lambda: dif.IFAttributorLiSSA(task=task, damping=reg, recursion_depth=300, batch_size=64),
           "arnoldi": lambda: dif.IFAttributorArnoldi(task=task, regularization=reg, proj_dim=100, max_iter=200),
           "ekfac": lambda: dif.IFAttributorEKFAC(task=task, damping=reg)}[method]()
    full = DataLoader(TensorDataset(Xtr, ytr), batch_size=len(ytr) if method in ("explicit", "cg", "arnoldi") else 128)
    att.cache(full)
    res = att.attribute(DataLoader(TensorDataset(Xtr, ytr), batch_size=256),
                        DataLoader(TensorDataset(Xte, yte), batch_size=M_TEST))
    return res.T  # dattri returns [n, m]


def run_captum(method: str, model, Xtr, ytr, Xte, yte) -> torch.Tensor:
    from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction

    ckpt = Path(os.environ["PEER_WORK"]) / "captum_unused_checkpoint"
    ckpt.touch()
    f = ArnoldiInfluenceFunction(model, TensorDataset(Xtr, ytr), str(ckpt), checkpoints_load_func=lambda m, p: 1.0,
                                 loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=256,
                                 projection_dim=100, arnoldi_dim=200, hessian_reg=L2 + DAMPING)
    return f.influence((Xte, yte))


#: imported before the clock starts: seconds measure the computation, not Python's import of a library
IMPORTS = {"ik": ["influencekit"], "kronfluence": ["kronfluence", "kronfluence.analyzer"],
           "pydvl": ["pydvl.influence.torch"], "dattri": ["dattri.algorithm.influence_function", "dattri.task"],
           "captum": ["captum.influence._core.arnoldi_influence_function"]}

RUNNERS = {"ik": run_ik, "kronfluence": run_kronfluence, "pydvl": run_pydvl, "dattri": run_dattri,
           "captum": run_captum}


def child(kind: str, method: str, work: Path, threads: int, memory_gb: float) -> None:
    torch.set_num_threads(threads)
    # A cap on the address space turns a method that would take the machine's memory (and the
    # other jobs' with it) into a clean "can't allocate" failure of that method alone.
    cap = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    warnings.simplefilter("ignore")
    lib, name = method.split(":")
    model, Xtr, ytr, Xte, yte = load(kind, work)
    if lib == "ik":
        from influencekit import SOLVERS

        if name.partition("@")[0] not in SOLVERS and name != "cg64":
            print(json.dumps({"method": method, "status": f"solver {name!r} not registered in influencekit yet"}))
            return
    import importlib

    for module in IMPORTS[lib]:
        importlib.import_module(module)
    # One warm-up call on a copy of the model with 400 training and 2 test points first, for every
    # library alike: one-time costs of a fresh process (torch.func's forward-mode decompositions,
    # JIT scripting, lazy imports) are reported, not timed. The copy keeps state a library attaches
    # to the model (kronfluence's tracked modules) out of the timed run.
    import copy

    t = time.perf_counter()
    warm_up = None  # the reference is compared with nothing, so it gets no warm-up
    if method not in REFERENCES:
        try:
            RUNNERS[lib](name, copy.deepcopy(model), Xtr[:400], ytr[:400], Xte[:2], yte[:2])
            warm_up = time.perf_counter() - t
        except Exception as e:  # on 400 points the damped Hessian can be indefinite: warm anyway
            warm_up = f"{time.perf_counter() - t:.2f} (raised {type(e).__name__})"
    t = time.perf_counter()
    M = RUNNERS[lib](name, model, Xtr, ytr, Xte, yte)
    secs = time.perf_counter() - t
    M = torch.as_tensor(np.asarray(M.detach().cpu() if isinstance(M, torch.Tensor) else M)).double()
    save_file({"M": M.contiguous()}, work / f"scores_{method.replace(':', '_')}.safetensors")
    res = {"method": method, "status": "ok", "seconds": secs, "warm_up_seconds": warm_up,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (work / f"result_{method.replace(':', '_')}.json").write_text(json.dumps(res))
    print(json.dumps(res))


# ---- agreement with exact influence ----------------------------------------------------------
def agreement(M: torch.Tensor, ref: torch.Tensor) -> dict:
    from scipy.stats import pearsonr, spearmanr

    a, b = M.flatten().numpy(), ref.flatten().numpy()
    top = [len(set(M[j].abs().topk(10).indices.tolist()) & set(ref[j].abs().topk(10).indices.tolist())) / 10
           for j in range(ref.shape[0])]
    return {"pearson": float(pearsonr(a, b)[0]), "spearman": float(spearmanr(a, b)[0]), "top10": float(np.mean(top))}


def run_child(a: argparse.Namespace, method: str) -> dict:
    """One method in a fresh subprocess; its JSON result line, or why it has none."""
    cmd = [sys.executable, __file__, "--model", a.model, "--child", method, "--work", a.work,
           "--threads", str(a.threads), "--seed", str(a.seed), "--damping", repr(a.damping),
           "--memory-gb", str(a.memory_gb)]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    limit = a.timeout * 4 if method in REFERENCES else a.timeout  # the reference must finish
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"method": method, "status": f"timeout after {limit} s"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        err = (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"method": method, "status": f"failed: {err}"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["mlp", "mlp-small", "cnn"], default="mlp")
    ap.add_argument("--only", default="")
    ap.add_argument("--child")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per method before it is reported as timed out")
    ap.add_argument("--retrain", action="store_true", help="train again even if a trained model is saved")
    ap.add_argument("--rerun", action="store_true",
                    help="run every compared method again instead of resuming (a saved reference is kept)")
    ap.add_argument("--memory-gb", type=float, default=16.0,
                    help="address-space cap per method; a method that needs more fails with an allocation error")
    ap.add_argument("--reference", choices=REFERENCES, default="ik:exact")
    ap.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/ik_peers")
    ap.add_argument("--seed", type=int, default=0,
                    help="another trained network of the same architecture (own work folder MODEL-seedS)")
    ap.add_argument("--damping", type=float, default=DAMPING,
                    help="d of (H + (l2 + d) I) for every method and the reference (own work folder ...-dD)")
    a = ap.parse_args()
    set_damping(a.damping)
    suffix = (f"-seed{a.seed}" if a.seed else "") + (f"-d{a.damping:g}" if a.damping != DEFAULT_DAMPING else "")
    work = Path(a.work) / (a.model + suffix)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PEER_WORK"] = str(work)
    if a.child:
        child(a.model, a.child, work, a.threads, a.memory_gb)
        return
    torch.set_num_threads(a.threads)
    if (work / "info.json").exists() and not a.retrain:  # training is minutes on a busy CPU: reuse it
        info = {**json.loads((work / "info.json").read_text()), "reused": True}
    else:
        info = prepare(a.model, work, a.seed)
    print("# workload", json.dumps(info))
    print(f"# damping: influencekit l2={L2} in the objective + d={DAMPING}; peers regularisation l2+d={L2 + DAMPING}")
    print("# sign: I_up,loss > 0 harmful, < 0 helpful; loo = -(1/n) I_up,loss; peer sign factors", json.dumps(SIGNS))
    wanted = a.only.split(",") if a.only else [m for m in METHODS if m not in REFERENCES]
    methods = [a.reference] + [m for m in METHODS if m in wanted and m != a.reference]
    ref_file = work / f"scores_{a.reference.replace(':', '_')}.safetensors"
    results = []
    for method in methods:
        done = work / f"result_{method.replace(':', '_')}.json"
        keep = not a.rerun or (method == a.reference and ref_file.exists())
        ran = not (done.exists() and keep)
        res = run_child(a, method) if ran else json.loads(done.read_text())  # resume: finished methods are kept
        if res.get("status") == "ok" and ref_file.exists():
            M = load_file(work / f"scores_{method.replace(':', '_')}.safetensors")["M"]
            ref = load_file(ref_file)["M"]
            if M.shape != ref.shape:
                res["status"] = f"shape {tuple(M.shape)} != {tuple(ref.shape)}"
            else:
                res["pearson_raw"] = agreement(M, ref)["pearson"]
                res.update(agreement(SIGNS[method.split(':')[0]] * M, ref))
        results.append(res)
        print(json.dumps(res), flush=True)
        if ran:
            record(__file__, f"{a.model + suffix} {method}", {**res, "workload": info, "damping": DAMPING, "l2": L2})
    print("\n| method | seconds | peak RSS MB | Pearson | Spearman | top-10 overlap | status |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if r.get("status") == "ok" and "pearson" in r:
            print(f"| {r['method']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['pearson']:.4f} | "
                  f"{r['spearman']:.4f} | {r['top10']:.2f} | ok |")
        else:
            print(f"| {r['method']} | | | | | | {r.get('status')} |")


if __name__ == "__main__":
    main()
