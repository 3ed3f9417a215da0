"""experiments.report: PNG figures and one self-contained, sortable, atomically written HTML page."""

import io
import re

import matplotlib.pyplot as plt
import numpy as np

from influencekit import SIGN_CONVENTION
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
    rep = report.Page("t <&> title")
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
    rep = report.Page("r")
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


def test_save_writes_atomically_with_no_temporary_left(tmp_path):
    path = report.save(b"\x89PNG data", tmp_path / "sub" / "f.png")
    assert path.read_bytes() == b"\x89PNG data" and [p.name for p in path.parent.iterdir()] == ["f.png"]
    assert not hasattr(report, "write_atomic")  # one atomic writer: influencekit.storage.atomic_write
