"""The I_up,loss matrix of a named problem with the training data sharded over torch.distributed
ranks: the entry point that checks ``scale.distributed`` against one process.

    python -m influencekit.experiments.sharded --problem digits-logreg --solver cg \
        --weights w --out single
    torchrun --nproc_per_node=2 -m influencekit.experiments.sharded --problem digits-logreg \
        --solver cg --weights w --out two --check single

Signs: ``influencekit.convention``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

from ..convention import SIGN_CONVENTION
from ..errors import CacheError
from ..scale.distributed import ShardedInfluence, active, init_from_env, rank_and_world, shard
from .problems import PROBLEMS, make


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m influencekit.experiments.sharded",
                                description="I_up,loss matrix of a named problem, training data sharded over "
                                            "torch.distributed ranks. " + SIGN_CONVENTION)
    p.add_argument("--problem", default="digits-logreg", choices=list(PROBLEMS),
                   help="problem name (experiments.problems)")
    p.add_argument("--data-dir",
                   help="data folder for problems that need one (default: $INFLUENCEKIT_DATA, else ../shared/data)")
    p.add_argument("--solver", default="cg", choices=["cg", "exact"], help="inverse-HVP solver")
    p.add_argument("--tests", type=int, default=20, help="score against the first TESTS test points")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tol", type=float, default=1e-10, help="CG relative tolerance")
    p.add_argument("--backend", choices=["gloo", "nccl"], help="default: nccl with CUDA, else gloo")
    p.add_argument("--out", required=True, help="where rank 0 writes the matrix (.safetensors + .json)")
    p.add_argument("--weights", help="safetensors record of the trained weights: loaded if it exists, else "
                                     "written (training is not bit-reproducible between processes, so a "
                                     "comparison of two runs must share the weights)")
    p.add_argument("--check", help="a matrix written before (e.g. by one process): fail if "
                                   "max|A-B| / max|B| >= 1e-5")
    return p


def main(argv: list[str] | None = None) -> int:
    from .. import fingerprint, storage

    args = _parser().parse_args(argv)
    init_from_env(args.backend)
    rank, world = rank_and_world()
    torch.set_num_threads(1)  # train as alike as possible in every process (--weights makes it exact)
    w = make(args.problem, data_dir=args.data_dir)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = torch.device(f"cuda:{torch.cuda.current_device()}") if active() and \
        dist.get_backend() == "nccl" else torch.device("cpu")
    model = w.model
    if args.weights and storage.exists(args.weights):  # the exact weights of an earlier run
        state, _ = storage.load(args.weights, {"problem": args.problem})
        with torch.no_grad():
            for k, t in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items():
                t.copy_(state[k])
    elif args.weights and rank == 0:
        storage.save(args.weights, {**dict(model.named_parameters()), **dict(model.named_buffers())},
                     {"problem": args.problem})
    model = model.to(device)
    if world > 1:  # one set of weights for all ranks, whatever each rank's training did
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t.data, src=0)
    opts = {"tol": args.tol} if args.solver == "cg" else {}
    inf = ShardedInfluence(model, w.loss, shard(w.train), l2=w.l2, solver=args.solver, damping=w.damping,
                           test_loss=w.test_loss, batch_size=args.batch_size, device=device, **opts)
    Xte, yte = w.test
    M = inf.up_loss((Xte[:args.tests], yte[:args.tests])).cpu()
    status = 0
    if rank == 0:
        meta = {"problem": args.problem, "settings": inf.settings(), "world_size": world,
                "n": inf.n, "m": M.shape[0], "model": fingerprint.fingerprint_model(model),
                "quantity": "up_loss = I_up,loss [m, n]"}
        storage.save(args.out, {"up_loss": M}, meta)
        print(f"wrote {args.out}: up_loss {list(M.shape)} from {world} process(es)")
        if args.check:
            try:  # a reference computed for another model would make the comparison void: refused
                ref = storage.load(args.check, {"model": meta["model"], "problem": args.problem})[0]["up_loss"]
                rel = ((M - ref).abs().max() / ref.abs().max()).item()
                print(f"max|A-B| / max|B| = {rel:.3e} against {args.check}")
                status = int(not rel < 1e-5)
            except CacheError as e:
                print(f"cannot compare: {e} (pass the same --weights to both runs)", file=sys.stderr)
                status = 2
    if active():
        dist.barrier()
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
