"""A region question on a running Ray cluster (issue 16.5): ``ray start --head``, then
``python -m viper_rs region ... --ray-address HOST:PORT`` (the documented command, in its own
process, as a user runs it) gives the in-process answer, then the cluster is stopped.

The driver runs in a subprocess: a ``ray.init`` to a token-less cluster inside the test
process would leave Ray's process-wide state behind for the tests after it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_region import big_scene, cut

from viper_rs.core.config import Settings
from viper_rs.region import RegionOptions, ask_region, open_region

QUESTIONS = ("How many buildings are there?", "What is the area covered by trees?")


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> list[Path]:
    return cut(big_scene(), tmp_path_factory.mktemp("mosaic"))


def stop_cluster(temp: str) -> None:
    """Stop the processes of the cluster started with ``--temp-dir temp`` (and no other
    Ray cluster on this machine, unlike ``ray stop``)."""
    import signal
    import time

    def ours() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if temp.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        end = time.monotonic() + 15
        while ours() and time.monotonic() < end:
            time.sleep(0.2)


def test_region_on_a_running_ray_cluster_by_address(mosaic) -> None:
    """The spectral detector (its region statistics pickled to the actors) answers on the
    cluster as in this process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    settings = Settings(planner="rules", detector="spectral")
    local = {}
    for q in QUESTIONS:
        answer, _ = ask_region(open_region(mosaic), q,
                               RegionOptions(chip_m=256.0, detector="spectral", settings=settings,
                                             planner="rules"))
        assert answer.error is None, answer.error
        local[q] = answer.value
    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # Ray's socket paths must stay short
    start = subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "2",
                            "--include-dashboard", "false", "--disable-usage-stats",
                            "--temp-dir", temp],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        for q, want in local.items():
            proc = subprocess.run(
                [sys.executable, "-m", "viper_rs", "region", *map(str, mosaic), "-q", q,
                 "--chip-m", "256", "--detector", "spectral", "--planner", "rules",
                 "--ray-address", f"127.0.0.1:{port}", "--json", "--no-progress"],
                env=env, capture_output=True, text=True, timeout=300,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert out["error"] is None, out["error"]
            assert out["coverage"]["backend"] == f"ray(127.0.0.1:{port})"
            assert out["value"] == pytest.approx(want, rel=1e-9), q
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)
