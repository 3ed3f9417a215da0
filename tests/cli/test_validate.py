"""`influencekit validate`: the CLI trains, explains, retrains and reports correlations."""

import json

from influencekit.cli import main


def test_validate_json_on_bundled_digits_reports_high_correlation(capsys):
    assert main(["validate", "--workload", "digits-logreg", "--solver", "cg", "--k", "15", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"pearson", "spearman", "k", "solver", "seconds", "problem", "convention"}
    assert out["k"] == 15 and out["solver"] == "cg" and out["problem"] == "digits-logreg"
    assert out["pearson"] > 0.99


def test_validate_prints_a_table_with_the_sign_convention(capsys):
    assert main(["validate", "--problem", "digits-logreg", "--solver", "exact", "--k", "5"]) == 0
    text = capsys.readouterr().out
    assert "positive = harmful" in text and "Pearson R" in text


def test_unknown_problem_is_rejected_by_the_parser(capsys):
    try:
        main(["validate", "--workload", "imagenet"])
    except SystemExit as e:
        assert e.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_test_index_out_of_range_is_a_typed_error_naming_the_range(capsys):
    assert main(["validate", "--test-index", "100000", "--k", "3"]) == 2
    assert "out of range" in capsys.readouterr().err
