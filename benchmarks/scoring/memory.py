"""Peak memory of scoring the [100 x n] I_up,loss matrix for n = 10k, 30k, 60k MNIST points.

The training set is a Dataset over the uint8 MNIST array (47 MB, loaded once whatever n is) that
converts one image at a time, so the baseline (model + data) is the same for every n and the
growth of the peak shows exactly what scoring adds. One subprocess per n (ru_maxrss is a
process's lifetime peak). The three-n run is recorded in benchmarks/scoring/memory.json (key ``layers``).

    python benchmarks/scoring/memory.py            # all three n
    python benchmarks/scoring/memory.py 60000      # one n (what each subprocess runs)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from influencekit.experiments import datasets
from influencekit.experiments.models import SmallCNN
from influencekit.influence import scores
from influencekit.objective import Objective

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402


class MnistUint8(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, n: int):
        self.x, self.y, self.n = x, y, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i]).float().div_(255.0)[None], int(self.y[i])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def one(n: int, method: str = "layers") -> dict:
    torch.set_num_threads(2)
    with np.load(datasets.data_dir() / "mnist.npz", allow_pickle=False) as f:
        x, y = f["x_train"], f["y_train"].astype(np.int64)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    obj = Objective(model, "cross_entropy", MnistUint8(x, y, n), batch_size=512)
    S = torch.randn(100, obj.p)
    # warm up one batch so allocator pools and kernels exist before the baseline is read
    scores(obj, S, MnistUint8(x, y, 512), method=method)
    base = rss_mb()
    t0 = time.perf_counter()
    out = scores(obj, S, method=method)
    seconds = time.perf_counter() - t0
    peak = rss_mb()
    return {"n": n, "method": method, "baseline_mb": base, "peak_mb": peak, "added_mb": peak - base,
            "output_mb": out.numel() * out.element_size() / 2**20, "seconds": seconds}


def main(argv: list[str]) -> None:
    if argv:
        print(json.dumps(one(int(argv[0]), *(argv[1:2] or []))))
        return
    print("| n | baseline RSS MB | peak RSS MB | added MB | output MB | added - output MB | seconds |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for n in (10_000, 30_000, 60_000):
        r = json.loads(subprocess.run([sys.executable, __file__, str(n)], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
        rows.append({**r, "added_minus_output_mb": r["added_mb"] - r["output_mb"]})
        print(f"| {n:,} | {r['baseline_mb']:.1f} | {r['peak_mb']:.1f} | {r['added_mb']:.1f} | {r['output_mb']:.1f} "
              f"| {r['added_mb'] - r['output_mb']:.1f} | {r['seconds']:.1f} |", flush=True)
    record(__file__, "layers", {"m": 100, "rows": rows})


if __name__ == "__main__":
    main(sys.argv[1:])
