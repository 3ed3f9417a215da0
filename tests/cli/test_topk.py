"""``influencekit topk`` on bundled digits: JSON with the sign convention, top lists ordered as
documented, and the k-NN prefiltered answer equal to the full answer restricted to the candidates."""

from __future__ import annotations

import json

import pytest

from influencekit.cli import main

ARGS = ["topk", "--json", "--n-train", "200", "--epochs", "3", "--test-index", "0", "4", "--top", "5",
        "--solver", "exact"]


@pytest.fixture(scope="module")
def full(capsys_module):
    return capsys_module(ARGS)


@pytest.fixture(scope="module")
def capsys_module():
    import contextlib
    import io

    def call(argv):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(argv) == 0
        return json.loads(buf.getvalue())

    return call


def test_topk_json_lists_harmful_and_helpful_with_the_convention(full):
    assert "positive = harmful" in full["convention"] and full["n"] == 200 and full["prefilter"] == "none"
    for t in full["tests"]:
        harm = [e["up_loss"] for e in t["harmful"]]
        help_ = [e["up_loss"] for e in t["helpful"]]
        assert harm == sorted(harm, reverse=True) and help_ == sorted(help_)
        assert harm[0] > 0 > help_[0]  # some training point hurts and some helps each test point
        for e in t["harmful"] + t["helpful"]:
            assert e["loo"] == pytest.approx(-e["up_loss"] / 200)


def test_knn_prefilter_with_k_equal_n_reproduces_the_full_answer(full, capsys_module, tmp_path):
    knn = capsys_module([*ARGS, "--prefilter", "knn", "--k", "200", "--index-dir", str(tmp_path)])
    assert knn["k"] == 200 and knn["index_rebuilt"] is True
    for a, b in zip(full["tests"], knn["tests"]):
        for kind in ("harmful", "helpful"):
            assert [e["train_index"] for e in a[kind]] == [e["train_index"] for e in b[kind]]
            assert [e["up_loss"] for e in a[kind]] == pytest.approx([e["up_loss"] for e in b[kind]], rel=1e-9)
    again = capsys_module([*ARGS, "--prefilter", "knn", "--k", "20", "--index-dir", str(tmp_path)])
    assert again["index_rebuilt"] is False and again["scored"] <= 40  # the saved index is reused


def test_gradient_prefilter_finds_the_full_top_lists_with_a_fifth_of_the_points(full, capsys_module, tmp_path):
    # 40 candidates of 200 (20 harmful + 20 helpful by the last layer's term of I_up,loss)
    grad = capsys_module([*ARGS, "--prefilter", "grad", "--k", "40", "--index-dir", str(tmp_path)])
    assert grad["prefilter"] == "grad" and grad["k"] == 40 and grad["index_rebuilt"] is True
    found = total = 0
    for a, b in zip(full["tests"], grad["tests"]):
        for kind in ("harmful", "helpful"):
            truth = {e["train_index"]: e["up_loss"] for e in a[kind]}
            for e in b[kind]:  # every score reported is the exact full score of that point
                if e["train_index"] in truth:
                    assert e["up_loss"] == pytest.approx(truth[e["train_index"]], rel=1e-9)
            found += len(truth.keys() & {e["train_index"] for e in b[kind]})
            total += len(truth)
    assert found / total >= 0.8
    again = capsys_module([*ARGS, "--prefilter", "grad", "--k", "40", "--index-dir", str(tmp_path)])
    assert again["index_rebuilt"] is False
