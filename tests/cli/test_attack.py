"""`influencekit attack`: attacks MNIST test images, retrains, saves before/after/difference PNGs
and reports flips that agree with the saved perturbations."""

import json

from safetensors.torch import load_file

from influencekit.cli import main


def test_attack_json_reports_retrained_outcome_within_the_bound(data_dir, tmp_path, capsys):
    args = ["attack", "--data-dir", str(data_dir), "--cnn-train", "600", "--n-train", "80", "--targets", "1",
            "--k", "2", "--bound", "2", "--max-steps", "2", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert "positive = harmful" in out["convention"] and "(1/n) I_pert,loss" in out["perturbation_convention"]
    (row,) = out["attacks"]
    assert row["flipped"] == (row["prediction_after"] != row["prediction_before"])
    assert out["success_rate"] == float(row["flipped"])
    assert row["loss_after"] > row["loss_before"]  # two steps along sign(I_pert,loss) raise the retrained loss
    assert row["linf"] <= 2 / 255 + 1e-6
    saved = load_file(str(tmp_path / f"attack_test{row['test_index']}.safetensors"))
    assert saved["index"].tolist() == row["index"]
    assert (saved["x_after"] - saved["x_before"]).abs().max() <= 2 / 255 + 1e-6
    assert (tmp_path / f"attack_test{row['test_index']}.png").stat().st_size > 1000


def test_attack_rejects_a_test_index_out_of_range(data_dir, capsys):
    args = ["attack", "--data-dir", str(data_dir), "--cnn-train", "300", "--n-train", "40", "--test-index", "99999"]
    assert main(args) == 2
    assert "out of range" in capsys.readouterr().err
