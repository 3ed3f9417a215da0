"""The HTML report in a real browser: headless Chromium renders it, images decode, tables sort.

Needs Debian's chromium (/usr/bin/chromium; `apt-get install -y chromium`); skipped without it.
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from influencekit.experiments import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: run `apt-get install -y chromium` "
                                                       "(Debian) to run the browser test of the HTML report")

# Appended to a copy of the report: after load, click the score header once (ascending sort) and
# record what the browser sees, so --dump-dom shows the rendered state.
PROBE = """<script>window.addEventListener('load',function(){
var th=document.querySelectorAll('table.sortable th')[1];th.click();
var imgs=Array.prototype.slice.call(document.images);
var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0}).length;
var vals=Array.prototype.map.call(document.querySelectorAll('table.sortable tbody tr'),
 function(r){return r.children[1].getAttribute('data-v')});
var d=document.createElement('pre');d.id='probe';d.textContent='images='+imgs.length+' decoded='+ok+
' sorted='+vals.join(',');document.body.appendChild(d);});</script>"""


def _dump(path: Path, tmp: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", path.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_report_renders_in_headless_chromium_with_images_and_sortable_tables(tmp_path):
    rep = report.Page("browser check")
    rep.figure(report.loo_figure([0.1, 0.2, 0.3], [0.1, 0.25, 0.3]), "loo")
    rows = [[f"p{i}", s, report.Image(report.thumbnail(np.random.default_rng(i).random((8, 8))), f"img {i}")]
            for i, s in enumerate([0.5, -2.0, 3.25, 0.0])]
    rep.table(["name", "score", "image"], rows)
    path = rep.write(tmp_path / "report.html")
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    dom = _dump(probed, tmp_path)
    m = re.search(r"images=(\d+) decoded=(\d+) sorted=([^<]*)", dom)
    assert m, dom[-1000:]
    assert int(m.group(1)) == 5 and int(m.group(2)) == 5  # every embedded PNG decoded by the browser
    assert [float(v) for v in m.group(3).split(",")] == [-2.0, 0.0, 0.5, 3.25]  # click sorted ascending
    assert dom.count("<table") == 1 and dom.count("<tr>") == 5
