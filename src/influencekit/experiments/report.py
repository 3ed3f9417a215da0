"""Figures (PNG, matplotlib Agg) and one self-contained HTML page, the report.

The page embeds every image as a base64 ``data:`` URI and carries its own CSS and a few
lines of JavaScript to sort tables by clicking a column header: it opens offline, from a
single file, with no CDN. It is written atomically (``storage.atomic_write``), so a reader
never sees half a report. Each use's result adds its own section (``Result.report(page)``).

Every page states the sign convention (``convention.SIGN_CONVENTION``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to PNG bytes only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import storage  # noqa: E402
from ..convention import SIGN_CONVENTION  # noqa: E402

# ---- images ---------------------------------------------------------------------------------


def png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def thumbnail(image: np.ndarray, scale: int = 4) -> bytes:
    """A grey-scale image [h, w] (any range) as PNG bytes, upscaled ``scale`` times (nearest)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2:
        a = a.reshape(int(round(np.sqrt(a.size))), -1)
    a = np.kron(a, np.ones((scale, scale)))
    buf = io.BytesIO()
    plt.imsave(buf, a, cmap="gray_r", format="png")
    return buf.getvalue()


def data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def save(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` (PNG bytes, a page, JSON) atomically to ``path``, readable by others; returns the path."""
    path = Path(path)
    storage.atomic_write(path, data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # the temporary file is private; a report is meant to be shared
    return path


# ---- figures --------------------------------------------------------------------------------

def influence_distance_figure(result: dict) -> bytes:
    """Paper Fig. 1: -(1/n)-free I_up,loss vs Euclidean distance to the test point, one panel per
    model (``explain.influence_vs_distance`` result). Colour: same label as the test point."""
    models = [m for m in ("rbf", "mlp") if m in result]
    titles = {"rbf": "RBF-kernel logistic regression", "mlp": "MLP (learned features, last layer)"}
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, m in zip(axes[0], models):
        r = result[m]
        same = np.asarray(r["same_label"], bool)
        ax.scatter(r["distance"][same], r["up_loss"][same], s=8, c="tab:green", label="same label as test")
        ax.scatter(r["distance"][~same], r["up_loss"][~same], s=8, c="tab:red", label="other label")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{titles[m]}\nSpearman(|I|, dist) = {r['spearman']:.2f}", fontsize=9)
        ax.set_xlabel("Euclidean distance to test input")
        ax.set_ylabel("I_up,loss (>0 harmful, <0 helpful)")
        ax.legend(fontsize=7)
    return png(fig)


def mislabel_figure(result, title: str) -> bytes:
    """Fraction of flipped labels found vs fraction checked, and test accuracy after fixing, for
    each ranking (``mislabel.MislabelResult``); for an aggregate of several flip seeds, the
    means with +-1 standard deviation shaded."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = {"self_influence": "|self-influence|", "loss": "training loss", "random": "random"}
    for k, v in result.found.items():
        line, = a.plot(result.fractions, v, label=names.get(k, k))
        if result.found_std is not None:
            sd = result.found_std[k]
            a.fill_between(result.fractions, v - sd, v + sd, color=line.get_color(), alpha=0.25)
    a.set_xlabel("fraction of training data checked")
    a.set_ylabel("fraction of flipped labels found")
    a.set_title(title + (f"\nmean of {len(result.repeats)} flip seeds, +-1 s.d." if result.repeats else ""),
                fontsize=8)
    a.legend(fontsize=8)
    checked = np.asarray(result.retrain_at) if hasattr(result, "retrain_at") else None
    for k, v in result.accuracy.items():
        xs = checked if checked is not None else np.linspace(0, 1, len(v))
        if result.accuracy_std is not None:
            b.errorbar(xs, v, yerr=result.accuracy_std[k], marker="o", capsize=2, label=names.get(k, k))
        else:
            b.plot(xs, v, marker="o", label=names.get(k, k))
    b.axhline(result.clean_accuracy, color="k", ls="--", lw=0.8, label="no labels flipped")
    b.set_xlabel("fraction of training data checked and fixed")
    b.set_ylabel("test accuracy after refit")
    b.legend(fontsize=8)
    return png(fig)


def loo_figure(predicted, actual, title: str = "") -> bytes:
    """Predicted -(1/n) I_up,loss against the actual leave-one-out change in test loss."""
    p, a = np.asarray(predicted), np.asarray(actual)
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.scatter(a, p, s=10)
    lim = [min(p.min(), a.min()), max(p.max(), a.max())]
    ax.plot(lim, lim, "k--", lw=0.7)
    ax.set_xlabel("actual change of test loss (retrained)")
    ax.set_ylabel("predicted -(1/n) I_up,loss")
    ax.set_title(title, fontsize=9)
    return png(fig)


def bar_figure(labels: list[str], values: list[float], title: str, xlabel: str) -> bytes:
    """Horizontal bars (e.g. features by I_pert), largest first at the top."""
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(labels) + 1))
    ax.barh(range(len(labels))[::-1], values, color=["tab:red" if v > 0 else "tab:blue" for v in values])
    ax.set_yticks(range(len(labels))[::-1], labels, fontsize=8)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    return png(fig)


def attack_figure(result, x_target, title: str = "") -> bytes:
    """A training-set attack (``attack.AttackResult``) on square grey-scale images: the target test
    image x_target [1, ...], then per perturbed training image: original / perturbed / difference
    (scaled to +-its largest magnitude)."""
    k = len(result.index)
    side = int(round(np.sqrt(x_target[0].numel())))
    fig, axes = plt.subplots(k + 1, 3, figsize=(6, 2 * (k + 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(x_target[0].reshape(side, side).float(), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"target (label {result.label})", fontsize=8)
    axes[0, 1].text(0, 0.5, f"prediction {result.prediction_before} -> {result.prediction_after}\n"
                    f"flipped: {result.flipped}\nloss {result.loss_before:.3f} -> {result.loss_after:.3f}",
                    fontsize=8)
    d = result.delta
    scale = max(float(d.abs().max()), 1e-12)
    for r in range(k):
        before, after, diff = (t[r].reshape(side, side).float() for t in (result.x_before, result.x_after, d))
        axes[r + 1, 0].imshow(before, cmap="gray", vmin=0, vmax=1)
        axes[r + 1, 1].imshow(after, cmap="gray", vmin=0, vmax=1)
        axes[r + 1, 2].imshow(diff, cmap="seismic", vmin=-scale, vmax=scale)
        axes[r + 1, 0].set_title(f"train #{int(result.index[r])} original", fontsize=8)
        axes[r + 1, 1].set_title("perturbed", fontsize=8)
        axes[r + 1, 2].set_title(f"difference (+-{scale * 255:.0f}/255)", fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return png(fig)


# ---- the HTML report ------------------------------------------------------------------------

@dataclass
class Image:
    """A table cell or block holding a PNG (embedded as a data URI)."""

    png: bytes
    alt: str = ""
    width: int | None = None


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table.sortable{border-collapse:collapse;margin:.5em 0 1em}table.sortable td,table.sortable th{border:1px solid #ddd;
padding:2px 6px;font-size:.85em;vertical-align:middle}table.sortable th{background:#f2f2f2;cursor:pointer}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}.note{color:#555;font-size:.9em}
figure{margin:.5em 0}figcaption{font-size:.85em;color:#444}td.snippet{max-width:420px;font-family:monospace;
font-size:.75em}"""

# Sort a table by the clicked column: numbers numerically (cells may carry data-v), text otherwise.
_JS = """document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th);
var asc=!th.classList.contains('asc');t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
th.classList.add(asc?'asc':'desc');var v=function(r){var c=r.children[i];var s=c.getAttribute('data-v');
if(s===null)s=c.textContent;var x=parseFloat(s);return isNaN(x)?s.toLowerCase():x};
var rows=Array.prototype.slice.call(b.rows);rows.sort(function(p,q){var a=v(p),c=v(q);
return (a<c?-1:a>c?1:0)*(asc?1:-1)});rows.forEach(function(r){b.appendChild(r)})})});"""


class Page:
    """A self-contained HTML page, built block by block: ``heading``, ``text``, ``figure``, ``table``."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[str] = []
        self.n_figures = 0
        self.n_tables = 0

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, *, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.blocks.append(f"<p{cls}>{html.escape(text)}</p>")

    def figure(self, png_bytes: bytes, caption: str) -> None:
        self.n_figures += 1
        self.blocks.append(f'<figure><img src="{data_uri(png_bytes)}" alt="{html.escape(caption)}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, columns: list[str], rows: list[list], caption: str = "") -> None:
        """A sortable table; a cell is text, a number (sorted numerically, shown to 4 significant
        digits) or an ``Image``."""
        self.n_tables += 1
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.blocks.append(f'<table class="sortable">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')

    def render(self) -> str:
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
                f"</title><style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                f'<p class="note">Sign convention: {html.escape(SIGN_CONVENTION)}</p>'
                + "\n".join(self.blocks) + f"<script>{_JS}</script></body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page atomically to ``path`` (a file, or a folder: ``path/report.html``)."""
        p = Path(path)
        if p.suffix.lower() not in (".html", ".htm"):
            p = p / "report.html"
        return save(self.render().encode("utf-8"), p)


def _cell(c) -> str:
    if isinstance(c, Image):
        w = f' width="{c.width}"' if c.width else ""
        return f'<td><img src="{data_uri(c.png)}" alt="{html.escape(c.alt)}"{w}></td>'
    if isinstance(c, (bool, np.bool_)):
        return f"<td>{'yes' if c else 'no'}</td>"
    if isinstance(c, (int, np.integer)):
        return f'<td data-v="{int(c)}">{int(c)}</td>'
    if isinstance(c, (float, np.floating)):
        return f'<td data-v="{float(c)!r}">{float(c):.4g}</td>'
    s = str(c)
    cls = ' class="snippet"' if len(s) > 60 else ""
    return f"<td{cls}>{html.escape(s)}</td>"


# ---- the main report: every use's section on one page -----------------------------------------

#: the sections of ``build`` in order; ``full`` adds the ones that need the shared data
SECTIONS = ("explain", "loo", "mislabel-digits")
FULL_SECTIONS = ("mislabel-mnist", "mislabel-enron", "mismatch")


def build(out: str | os.PathLike, *, full: bool = False, k: int = 30, mnist_train: int = 5000,
          data_dir: str | None = None, seed: int = 0, progress: bool = False) -> tuple[Path, dict]:
    """The main report into the folder ``out``: explanations of a few test digits with influence vs
    distance, the leave-one-out check (retraining without each of the ``k`` most influential points)
    and mislabel detection on digits; with ``full`` also MNIST 1 vs 7 (``mnist_train`` points) and
    Enron mislabel detection and the diabetes mismatch (shared data, ``data_dir``). Writes
    out/report.html, the figures as PNG and out/summary.json; returns (report path, summary)."""
    import time

    from tqdm.auto import tqdm

    # the uses import this module for ``Page``: import them when a report is built, not before
    from . import explain, mislabel, mismatch, problems, validate

    out = Path(out)
    t0 = time.perf_counter()
    page = Page("influencekit report: which training points are responsible for a prediction")
    page.text("Influence functions (Koh & Liang 2017) computed with influencekit on small models; every number "
              "below can be reproduced with the influencekit CLI (explain, validate, mislabel, mismatch).")
    summary: dict = {"convention": SIGN_CONVENTION}
    steps = list(SECTIONS) + (list(FULL_SECTIONS) if full else [])
    bar = tqdm(steps, desc="report", unit="section", disable=not progress)
    for step in bar:
        bar.set_postfix_str(step)
        if step == "explain":
            e = explain.run(explain.problem("digits", "logreg", l2=1e-2, data_dir=data_dir, seed=seed))
            e.report(page)
            save(e.distance_figure(), out / "influence_vs_distance.png")
            summary["explain"] = e.to_json()
        elif step == "loo":
            summary["loo"] = _loo_section(page, validate.run(problems.make("digits-logreg", seed=seed), "exact", k=k))
        elif step.startswith("mislabel"):
            ds = step.split("-")[1]
            r = mislabel.run(mislabel.problem(ds, data_dir=data_dir, seed=seed,
                                              n_train=mnist_train if ds == "mnist" else None),
                             retrain_at=(0.0, 0.1, 0.2) if ds == "digits" else (0.0, 0.05, 0.1, 0.2, 0.3))
            r.report(page)
            save(r.figure(), out / f"mislabel_{ds}.png")
            summary[step] = r.to_json()
        elif step == "mismatch":
            m = mismatch.run(mismatch.problem(data_dir=data_dir, seed=seed))
            m.report(page)
            summary["mismatch"] = m.to_json()
    summary["seconds"] = time.perf_counter() - t0
    page.text(f"Built in {summary['seconds']:.0f} s.", note=True)
    path = page.write(out)
    save(json.dumps(summary, indent=1, default=float).encode(), out / "summary.json")
    return path, summary


def _loo_section(page: Page, r) -> dict:
    """The leave-one-out check of the main report (a ``validate.ValidateResult`` on digits 1 vs 7):
    predicted -(1/n) I_up,loss against actual retraining, figure and table; returns its summary."""
    page.heading(f"Leave-one-out check: digits 1 vs 7 logistic regression (n = {r.n}, p = {r.p})")
    page.figure(loo_figure(r.predicted, r.actual, f"Pearson R = {r.pearson:.3f}, Spearman = {r.spearman:.3f}, "
                           f"k = {r.k}"),
                f"test point {r.test_index} (highest test loss): the {r.k} training points with the largest "
                f"|influence| retrained out one at a time. Pearson R = {r.pearson:.4f}, Spearman = {r.spearman:.4f}.")
    page.table(["train index", "predicted -(1/n) I_up,loss", "actual LOO change"],
               [[i, p, a] for i, p, a in zip(r.train_index, r.predicted, r.actual)])
    return {"pearson": r.pearson, "spearman": r.spearman, "k": r.k, "n": r.n, "p": r.p, "test_index": r.test_index,
            "seconds": r.seconds, "retrain_seconds": r.retrain_seconds}
