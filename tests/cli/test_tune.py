"""``influencekit tune`` on bundled digits: the table of settings and the chosen one (the search
itself is checked in tests/experiments/test_tune.py)."""

from influencekit.cli import main


def test_tune_prints_its_table_and_the_chosen_setting(capsys):
    code = main(["tune", "--n-train", "120", "--epochs", "2", "--test-index", "0", "4", "--sample", "60",
                 "--target", "0.5", "--no-cg"])
    text = capsys.readouterr().out
    assert code == 0 and "chosen: lissa" in text and "HVPs/test" in text
