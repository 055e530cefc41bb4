"""SIGTERM and SIGINT stop `python app.py` within seconds while an area question runs: the
app exits (code 0), its area worker and every other process it started are gone, and its
evidence folder is removed. No browser: the question is asked through the app's own API
(gradio_client), as the page does."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.test_ui_area import mosaic_bbox, write_mosaic
from tests.test_ui_browser import _start_app

#: Seconds the app may take to exit after the signal.
STOP_S = 6.0


def _worker(app: psutil.Process) -> psutil.Process | None:
    for p in app.children(recursive=True):
        try:
            if "viper_rs.ui.area_jobs" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            pass
    return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_app_while_an_area_question_runs(tmp_path: Path, signum: int):
    from gradio_client import Client

    tiles = write_mosaic(tmp_path / "tiles")
    proc, url, log_path = _start_app(
        tmp_path, "--folder", str(tiles), "--index", str(tmp_path / "index"),
        "--detector", "spectral", "--planner", "rules", "--no-warmup")
    app = psutil.Process(proc.pid)
    try:
        client = Client(url, verbose=False)
        box = ",".join(map(str, mosaic_bbox()))
        # At 0.25 m/px the mosaic's chips take tens of seconds: the question is running.
        job = client.submit("How many buildings are there?", box, 0.25, "spectral", "rules",
                            "", "", "", "", None, None, None, None, False,
                            api_name="/on_area")
        deadline = time.monotonic() + 120
        while (worker := _worker(app)) is None:
            assert time.monotonic() < deadline and not job.done(), log_path.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(3.0)  # the worker is building its detector or reading chips
        assert worker.is_running() and not job.done()
        started = [p for p in app.children(recursive=True)]
        assert worker in started
        t0 = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert took < STOP_S, f"the app took {took:.1f} s to stop:\n{text[-3000:]}"
    assert code == 0, text[-3000:]
    assert f"stopped ({signal.Signals(signum).name})" in text
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {alive}"
    assert not list((tmp_path / "tmp").glob("viper_rs_ui_*"))  # the evidence folder
