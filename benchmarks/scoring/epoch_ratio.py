"""Scoring the full [100 x 60000] I_up,loss matrix vs one plain training epoch, same run, same
data pipeline (uint8 MNIST Dataset, batch 512), SmallCNN, float32. Prints both and the ratio
for each scoring method. s_test is a fixed random [100, p] matrix: scoring cost does not depend
on its values (the curvature stage is measured by cnn_mnist.py). Records the run in
benchmarks/scoring/epoch_ratio.json (key ``n=N``).

    python benchmarks/scoring/epoch_ratio.py [n]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from influencekit.data import Examples
from influencekit.experiments import datasets
from influencekit.experiments.models import SmallCNN
from influencekit.influence import scores
from influencekit.objective import Objective

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from memory import MnistUint8  # noqa: E402
from record import record  # noqa: E402


def main(n: int = 60_000) -> None:
    torch.set_num_threads(2)
    with np.load(datasets.data_dir() / "mnist.npz", allow_pickle=False) as f:
        x, y = f["x_train"], f["y_train"].astype(np.int64)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    data = MnistUint8(x, y, n)
    obj = Objective(model, "cross_entropy", data, batch_size=512)
    S = torch.randn(100, obj.p)
    t0 = time.perf_counter()
    for _, xb, yb in Examples(data).batches(512):  # one plain epoch: forward + backward
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
    epoch = time.perf_counter() - t0
    print(f"one epoch (forward+backward), n = {n}: {epoch:.2f} s")
    figures = {"n": n, "m": 100, "epoch_seconds": epoch}
    for method in ("layers", "grad"):
        t0 = time.perf_counter()
        scores(obj, S, method=method)
        s = time.perf_counter() - t0
        print(f"scoring [100 x {n}] with method={method}: {s:.2f} s = {s / epoch:.2f}x one epoch")
        figures[method] = {"seconds": s, "ratio_to_epoch": s / epoch}
    record(__file__, f"n={n}", figures)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
