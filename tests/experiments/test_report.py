"""report: PNG figures and one self-contained, sortable, atomically written HTML report."""

import io
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from influencekit import SIGN_CONVENTION
from influencekit.cli import main
from influencekit.errors import InputError
from influencekit.experiments import report


def test_thumbnail_is_a_png_of_the_image_upscaled():
    img = np.arange(64, dtype=float).reshape(8, 8)
    png = report.thumbnail(img, scale=3)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = plt.imread(io.BytesIO(png))
    assert decoded.shape[:2] == (24, 24)
    # nearest upscaling: each 3x3 block is one colour, and darker pixels for larger values (gray_r)
    assert np.allclose(decoded[0, 0], decoded[2, 2]) and decoded[0, 0, 0] > decoded[-1, -1, 0]


def test_report_embeds_images_as_data_uris_and_states_the_sign_convention():
    rep = report.Report("t <&> title")
    rep.heading("section")
    rep.text("a < b")
    rep.figure(report.loo_figure([0.1, 0.2, 0.3], [0.1, 0.25, 0.3]), "loo")
    rep.table(["name", "score", "image"], [["x", 2.5, report.Image(report.thumbnail(np.eye(4)), "eye")],
                                           ["y", -1.0, report.Image(report.thumbnail(np.ones((4, 4))), "ones")]])
    text = rep.render()
    assert text.count('src="data:image/png;base64,') == 3
    assert "http://" not in text and "https://" not in text  # nothing to fetch: opens offline
    assert "t &lt;&amp;&gt; title" in text and "a &lt; b" in text  # escaped
    assert SIGN_CONVENTION.split(":")[0] in text
    assert 'class="sortable"' in text and "addEventListener('click'" in text
    assert re.search(r'<td data-v="-1.0">-1</td>', text)  # numbers sort by their exact value


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    rep = report.Report("r")
    rep.text("hello")
    path = rep.write(tmp_path / "out")
    assert path == tmp_path / "out" / "report.html"
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]
    assert path.stat().st_mode & 0o044  # readable by others, like any written file


def test_mislabel_figure_draws_one_curve_per_ranking():
    from influencekit.experiments.mislabel import MislabelResult

    f = np.linspace(0, 1, 5)
    r = MislabelResult(fractions=f, found={"self_influence": f, "loss": f, "random": f}, retrain_at=np.array([0, .5]),
                       accuracy={"self_influence": np.array([.8, .9]), "loss": np.array([.8, .85]),
                                 "random": np.array([.8, .81])}, clean_accuracy=.95, noisy_accuracy=.8, n=10,
                       n_flipped=1, p=3)
    png = report.mislabel_figure(r, "t")
    assert plt.imread(io.BytesIO(png)).shape[1] > 400


def test_explain_command_writes_a_report_with_thumbnails_and_json(tmp_path, capsys):
    import json

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


def test_mislabel_repeats_report_means_with_their_spread_over_flip_seeds():
    from influencekit.cli import mislabel

    res = mislabel.compute("digits", repeats=2, retrain_at=(0.0, 0.1), progress=False)
    r = res["result"]
    assert [x["seed"] for x in r.repeats] == [0, 1]
    found = [x["found_at_10pct"]["self_influence"] for x in r.repeats]
    assert r.at(0.1)["self_influence"] == pytest.approx(np.mean(found))
    rep = report.Report("t")
    mislabel.add_to_report(rep, res)
    html = rep.render()
    assert "means over 2 flip seeds" in html and "s.d. of found" in html
    with pytest.raises(InputError, match="repeats"):
        mislabel.compute("digits", repeats=0)


@pytest.mark.parametrize("model,classes,expected", [("linear", None, 2), ("linear", "all", 10), ("mlp", None, 10),
                                                     ("mlp", "1v7", 2), ("cnn", None, 10)])
def test_mislabel_mnist_takes_1_vs_7_or_all_ten_classes(data_dir, model, classes, expected):
    from influencekit.cli import mislabel

    data = mislabel.load("mnist", str(data_dir), 0, n_train=400, model=model, classes=classes)
    Xtr, ytr = data["train"]
    assert Xtr.shape == ((400, 1, 28, 28) if model == "cnn" else (400, 784)) and int(ytr.max()) + 1 == expected
    assert data["classes"] == ("all" if expected == 10 else "1v7")


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_network_mislabel_runs_default_to_the_subset_their_recipes_were_chosen_on(data_dir, model):
    from influencekit.cli import mislabel

    assert len(mislabel.load("mnist", str(data_dir), 0, model=model)["train"][1]) == mislabel.NET_N_TRAIN
    assert len(mislabel.load("mnist", str(data_dir), 0, model=model, n_train=0)["train"][1]) == 60_000
