"""``influencekit topk`` on bundled digits: the command prints JSON with the sign convention and
writes it under --out (the numbers are checked in tests/experiments/test_topk.py)."""

from __future__ import annotations

import json

from influencekit.cli import main

ARGS = ["--n-train", "120", "--epochs", "2", "--test-index", "0", "4"]


def test_topk_json_lists_harmful_and_helpful_with_the_convention(capsys, tmp_path):
    assert main(["topk", *ARGS, "--top", "3", "--solver", "exact", "--prefilter", "knn", "--k", "30", "--json",
                 "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "positive = harmful" in out["convention"] and out["n"] == 120 and out["prefilter"] == "knn"
    assert out["candidates"] == 30 and out["index_path"] == str(tmp_path / "index" / "digits-mlp-knn-flat")
    assert [t["test_index"] for t in out["tests"]] == [0, 4]
    for t in out["tests"]:
        harm = [e["up_loss"] for e in t["harmful"]]
        assert len(harm) == 3 and harm == sorted(harm, reverse=True)
    assert json.loads((tmp_path / "topk.json").read_text()) == out


def test_topk_rejects_a_test_index_out_of_range(capsys):
    assert main(["topk", "--n-train", "120", "--epochs", "1", "--test-index", "99999"]) == 2
    assert "out of range" in capsys.readouterr().err

