"""Run the CLI in a fresh process and measure its own peak resident memory.

A process forked from a large one (a pytest worker that loaded models) counts the parent's
pages in its ``ru_maxrss`` until it execs, so the CLI is started from a small wrapper
process and measured there (``RUSAGE_CHILDREN`` of the wrapper: the CLI alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "timeout = float(sys.argv[1])\n"
    "try:\n"
    "    p = subprocess.run([sys.executable, '-m', 'viper_rs', *sys.argv[2:]],"
    " capture_output=True, text=True, timeout=timeout)\n"
    "    rc, out, err = p.returncode, p.stdout, p.stderr\n"
    "except subprocess.TimeoutExpired as exc:\n"
    "    rc, out, err = None, exc.stdout or '', exc.stderr or ''\n"
    "    out, err = (x.decode() if isinstance(x, bytes) else x for x in (out, err))\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
    "print(json.dumps({'rc': rc, 'out': out, 'err': err, 'mb': peak}))\n"
)


def cli_peak(args: list[str], env: dict[str, str] | None = None, timeout: float = 120
             ) -> tuple[int | None, str, str, float]:
    """``python -m viper_rs ARGS``: (exit code, None when killed at ``timeout`` s; stdout;
    stderr; the CLI process's peak resident memory in MB)."""
    p = subprocess.run([sys.executable, "-c", _WRAPPER, str(timeout), *args], cwd=REPO,
                       capture_output=True, text=True, timeout=timeout + 60,
                       env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})})
    r = json.loads(p.stdout)
    return r["rc"], r["out"], r["err"], r["mb"]
