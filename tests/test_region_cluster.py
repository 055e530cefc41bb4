"""A region question on a running Ray cluster (issue 16.5): ``ray start --head``, then
``ask_region(..., ray_address="HOST:PORT")`` gives the in-process answer, then ``ray stop``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_region import big_scene, cut

from viper_rs.config import Settings
from viper_rs.region import ask_region, open_region
from viper_rs.region.oracle import MosaicOracle

QUESTIONS = ("How many buildings are there?", "What is the area covered by trees?")


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> list[Path]:
    return cut(big_scene(), tmp_path_factory.mktemp("mosaic"))


def stop_cluster(temp: str) -> None:
    """Stop the processes of the cluster started with ``--temp-dir temp`` (and no other
    Ray cluster on this machine, unlike ``ray stop``)."""
    import psutil

    procs = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp in arg for arg in proc.info["cmdline"] or []):
                procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def test_region_on_a_running_ray_cluster_by_address(mosaic, monkeypatch) -> None:
    """The oracle and the spectral detector (its region statistics pickled to the actors)
    answer on the cluster as in this process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    image = open_region(mosaic)
    settings = Settings(planner="rules")
    local = {}
    for det in ("oracle", "spectral"):
        for q in QUESTIONS:
            detector = MosaicOracle(big_scene()) if det == "oracle" else "spectral"
            answer, _ = ask_region(image, q, chip_m=256.0, detector=detector, settings=settings,
                                   planner="rules")
            assert answer.error is None, answer.error
            local[det, q] = answer.value
    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # Ray's socket paths must stay short
    start = subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "2",
                            "--include-dashboard", "false", "--disable-usage-stats",
                            "--temp-dir", temp],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        for (det, q), want in local.items():
            detector = MosaicOracle(big_scene()) if det == "oracle" else "spectral"
            answer, report = ask_region(image, q, chip_m=256.0, detector=detector,
                                        settings=settings, planner="rules",
                                        ray_address=f"127.0.0.1:{port}")
            assert answer.error is None, answer.error
            assert report.coverage["backend"] == f"ray(127.0.0.1:{port})"
            assert answer.value == want, (det, q)
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)
