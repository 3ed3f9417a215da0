"""The commands of the paper's uses (explain, mislabel, mismatch, report): each only parses, calls its
experiment and prints; what they print and write is the experiment's result."""

import json
import subprocess
import sys

import pytest

from influencekit.cli import main


def test_explain_command_writes_a_report_with_thumbnails_and_json(tmp_path, capsys):
    assert main(["explain", "--no-distance", "--k", "3", "--test-index", "0", "5", "--json",
                 "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "positive = harmful" in out["convention"]
    e = out["explanations"][0]
    assert [h["up_loss"] < 0 for h in e["helpful"]] == [True] * 3
    assert [h["up_loss"] > 0 for h in e["harmful"]] == [True] * 3
    html = (tmp_path / "report.html").read_text()
    # per test point: one test-image table + a table of 3 helpful + 3 harmful thumbnails
    assert html.count("<table") == 4 and html.count("data:image/png") == 2 * (1 + 6)


def test_report_command_needs_an_output_folder(capsys):
    assert main(["report"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--dataset", "--fraction", "--setup", "--repeats"])
def test_mislabel_command_lists_its_options(flag, capsys):
    with pytest.raises(SystemExit):
        main(["mislabel", "--help"])
    assert flag in capsys.readouterr().out


def test_the_mislabel_parser_offers_the_experiments_set_ups_and_recipes():
    from influencekit.cli import mislabel as cmd
    from influencekit.experiments import mislabel as ml

    assert set(cmd.SETUPS) == set(ml.ENRON) and set(cmd.NETS) == set(ml.NETS)
    assert cmd.NET_N_TRAIN == ml.NET_N_TRAIN


def test_mislabel_command_json_is_the_experiments_result(capsys):
    from influencekit.experiments import mislabel as ml

    assert main(["mislabel", "--json", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = ml.run(ml.problem("digits"))
    assert out == json.loads(json.dumps(r.to_json()))
    assert out["dataset"] == "digits" and out["l2"] == ml.L2["digits"] and "positive = harmful" in out["convention"]
    assert main(["mislabel", "--repeats", "0"]) == 2


def test_building_the_use_commands_parsers_imports_neither_torch_nor_the_experiments():
    code = ("import argparse, sys\n"
            "from influencekit.cli import explain, mislabel, mismatch, attack, report\n"
            "for m in (explain, mislabel, mismatch, attack, report):\n"
            "    m.add_arguments(argparse.ArgumentParser())\n"
            "bad = [k for k in sys.modules if k == 'torch' or k.startswith('influencekit.experiments')]\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
