"""The README's "Use it" snippet runs as printed and means what it says."""

import re
from pathlib import Path

import torch

from influencekit import Objective
from influencekit.data import Examples
from influencekit.experiments.fit import fit_linear
from influencekit.retrain import evaluate_losses

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no ```python block"
    return blocks[0]


def test_the_readme_snippet_runs_and_its_influence_predicts_leave_one_out_retraining(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet's resumable run writes its folder here
    g = torch.Generator().manual_seed(0)
    X_train = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y_train = (X_train[:, :3] + 0.5 * torch.randn(40, 3, generator=g, dtype=torch.float64)).argmax(1)
    X_test, y_test = X_train[:5] + 0.1, y_train[:5]
    model = fit_linear(X_train, y_train, 1e-3, classes=3)  # trained with the snippet's l2, to a stationary point
    ns = {"model": model, "X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}
    exec(compile(_snippet(), str(README), "exec"), ns)

    m, n = len(X_test), len(X_train)
    assert ns["scores"].shape == (m, n) and ns["change"].shape == (m, n) and ns["selfinf"].shape == (n,)
    torch.testing.assert_close(ns["change"], -ns["scores"] / n)  # loo = -(1/n) I_up,loss, as the table says
    assert (ns["selfinf"] <= 0).all()
    top = ns["top"]  # the 5 largest and the 5 most negative I_up,loss of each test point, in order
    torch.testing.assert_close(top.harmful, ns["scores"].sort(1, descending=True).values[:, :5])
    torch.testing.assert_close(top.helpful, ns["scores"].sort(1).values[:, :5])
    assert top.scored == n and top.candidates is None
    torch.testing.assert_close(ns["saved"], ns["scores"])  # the resumable run stores the same matrix
    assert (tmp_path / "scores" / "run.json").exists()
    predicted, actual = ns["change"][:, [3, 14]], ns["actual"]
    assert actual.shape == (m, 2)
    # a convex model at its optimum, no damping: the first-order prediction is within a few percent
    assert torch.sign(predicted).eq(torch.sign(actual)).all()
    torch.testing.assert_close(predicted, actual, rtol=0.15, atol=1e-9)
    # moving training input 3 a little along +I_pert raises test loss 0 by about (1/n) I_pert . delta (refit)
    assert ns["ipert"].shape == X_train.shape
    delta = 1e-3 * ns["ipert"][3] / ns["ipert"][3].norm()
    moved = X_train.clone()
    moved[3] += delta
    test0 = Examples((X_test[:1], y_test[:1]))

    def refit_test_loss(X):
        obj = Objective(fit_linear(X, y_train, 1e-3, classes=3), "cross_entropy", (X, y_train), l2=1e-3)
        return evaluate_losses(obj, obj.theta, test0)[0]

    change = refit_test_loss(moved) - refit_test_loss(X_train)
    assert change > 0
    torch.testing.assert_close(change, (ns["ipert"][3] * delta).sum() / n, rtol=0.05, atol=0)
