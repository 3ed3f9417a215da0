"""One machine-readable results file per benchmark script: its figures, the command, the date and the machine.

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/, from a script one level down
    from record import record
    record(__file__, "mnist-logreg:exact", {"pearson": ..., "spearman": ...})

writes ``benchmarks/<area>/<script>.json``:

    {"script": "benchmarks/<area>/<script>.py",
     "runs": {KEY: {"figures": {...}, "command": "...", "date": "YYYY-MM-DD HH:MM UTC", "machine": {...}}}}

From a shell script: ``python benchmarks/record.py SCRIPT KEY 'FIGURES_JSON' 'COMMAND'``.

One KEY per case the script measures; a run replaces its own keys and keeps the others, so a partial
run (one case, one stage) leaves the rest of the file as it was. ``benchmarks/assemble.py`` builds
BENCHMARKS.md from these files only. Standard library only: torch is described when the script has
imported it, never imported here.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def results_path(script: str | Path) -> Path:
    """benchmarks/<area>/<script>.py -> benchmarks/<area>/<script>.json"""
    return Path(script).resolve().with_suffix(".json")


def machine() -> dict:
    """CPU model, cores, memory, load, torch version and threads, GPU if torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines()
                   if x.startswith("MemTotal"))
        memory_gib = round(kib / 2**20)
    except (OSError, StopIteration):
        memory_gib = None
    m = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "python": platform.python_version()}
    if hasattr(os, "getloadavg"):  # other jobs on the machine inflate wall-clock seconds
        m["load"] = f"load average {os.getloadavg()[0]:.1f}"
    torch = sys.modules.get("torch")  # only when the benchmark itself uses torch
    if torch is not None:
        m.update(torch=torch.__version__, threads=torch.get_num_threads())
        if torch.cuda.is_available():
            m["gpu"] = torch.cuda.get_device_name()
    return m


def command(argv: list[str] | None = None) -> str:
    """The command line that is running, as it would be typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ)
    return " ".join(filter(None, [env, "python", shlex.join([str(script), *argv[1:]])]))


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def record(script: str | Path, key: str, figures: dict, *, cmd: str | None = None, date: str | None = None,
           host: dict | None = None, **extra) -> dict:
    """Write one run (``figures`` under ``key``) into the script's results file; returns the entry.

    ``cmd``, ``date`` and ``host`` (a machine description) default to this process's; they are given
    explicitly only when figures measured earlier are transcribed. ``extra`` (e.g. ``note``) is stored
    beside them.
    """
    path = results_path(script)
    data = json.loads(path.read_text()) if path.exists() else {}
    rel = Path(script).resolve().relative_to(ROOT).as_posix()
    entry = {"figures": figures, "command": cmd or command(), "date": date or now(),
             "machine": host or machine(), **extra}
    data = {"script": rel, "runs": {**data.get("runs", {}), key: entry}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    tmp.replace(path)
    return entry


if __name__ == "__main__":  # for shell scripts: record.py SCRIPT KEY FIGURES_JSON COMMAND
    try:  # describe the torch the shell script ran with
        import torch  # noqa: F401
    except ImportError:
        pass
    script, key, figures, cmd = sys.argv[1:5]
    record(script, key, json.loads(figures), cmd=cmd)
