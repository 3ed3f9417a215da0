"""Rebuild BENCHMARKS.md's per-benchmark sections from each ``benchmarks/<name>/RESULTS.md``.

    python benchmarks/assemble.py

BENCHMARKS.md = its hand-written head (summary against the issues' targets, the leave-one-out
table, re-runs), kept as it is up to the first generated section, then one section per entry of
SECTIONS: a heading, a pointer to the RESULTS.md, and that file with every heading one level down.
Each RESULTS.md stays the place where a benchmark's figures are written, next to its script.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = [
    ("Scoring the [100 x n] matrix (issues 2, 3)", "scoring"),
    ("Curvature solvers vs exact (issue 3)", "curvature"),
    ("Peers (issue 3)", "peers"),
    ("Scale-out and resume (issues 3, 7)", "scaleout"),
    ("GPU: the CUDA path (issues 2, 3)", "gpu"),
    ("FastIF (issue 4)", "fastif"),
    ("Attack (issue 5)", "attack"),
    ("Uses (issue 6)", "uses"),
    ("Faults (issue 7)", "faults"),
]


def main() -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    first = f"## {SECTIONS[0][0]}\n"
    if first not in text:
        raise SystemExit(f"BENCHMARKS.md has no section {first.strip()!r} to start the generated part at.")
    parts = [text[:text.index(first)].rstrip() + "\n"]
    for title, name in SECTIONS:
        body = (ROOT / "benchmarks" / name / "RESULTS.md").read_text()
        body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
        parts.append(f"\n## {title}\n\nFrom `benchmarks/{name}/RESULTS.md` (figures and files there).\n\n"
                     + body.strip() + "\n")
    path.write_text("".join(parts))


if __name__ == "__main__":
    main()
