"""Region scans (issue 16.5): the chip scan before the program, on three backends, resumable,
with failed chips reported as missing coverage."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_region import big_scene, cut

from viper_rs.agent.loop import program_queries
from viper_rs.core.config import Settings
from viper_rs.region import RegionDetector, RegionOptions, ask_region, open_region
from viper_rs.region.chips import layout, read_chip
from viper_rs.region.oracle import MosaicOracle
from viper_rs.region.scan import ProcessRunner
from viper_rs.synthetic import BUILDING_CLASSES, ROAD, WATER

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How many buildings are there?"


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> list[Path]:
    return cut(big_scene(), tmp_path_factory.mktemp("mosaic"))


class SlowOracle(MosaicOracle):
    """The mosaic oracle, slowed down per chip (a real detector's cost)."""

    def score_map(self, image, query):
        time.sleep(0.02)
        return super().score_map(image, query)


def dies_on_r1c1(image, chip):
    """A reader whose process dies on chip r1c1 (a worker killed mid-chip)."""
    if chip.id == "r1c1":
        os._exit(3)
    return read_chip(image, chip)


def n_buildings() -> int:
    return len(big_scene().objects_of(*BUILDING_CLASSES))


def test_program_queries_are_the_detect_keys() -> None:
    program = ('a = find("small  Residential building")\n'
               'n = count(target="road")\n'
               'c = "tr" + "ee"\n'
               'return compare("large water area", count(c), "greater") and exists("Water Area")')
    assert sorted(program_queries(program)) == ["residential building", "road", "water area"]
    assert program_queries("return count(") == []


def test_scan_longer_than_the_wall_clock_runs_before_the_program(mosaic) -> None:
    """144 chips at 20 ms each take ~3 s; the program's limit is 1 s: the literal concept is
    scanned in prepare and the program only reads the cache."""
    settings = Settings(sandbox_wall_s=1.0)
    image = open_region(mosaic)
    answer, report = ask_region(image, QUESTION,
                                RegionOptions(chip_m=64.0, halo_m=0.0,
                                              detector=SlowOracle(big_scene()), settings=settings,
                                              planner="rules"))
    assert answer.error is None, answer.error
    assert answer.value == n_buildings()
    assert answer.timings["prepare_ms"] > 1000.0 > answer.timings["program_ms"]
    assert report.coverage["computed_chips"] == len(report.chips) == 144

    # a concept known only at run time is scanned inside the program, under its limit
    answer, _ = ask_region(image, QUESTION,
                           RegionOptions(chip_m=64.0, halo_m=0.0, detector=SlowOracle(big_scene()),
                                         settings=settings,
                                         program='def execute_command(image):\n'
                                                 '    c = "build" + "ing"\n    return count(c)\n'))
    assert answer.error is not None and answer.error["type"] == "timeout"


def found(det: RegionDetector, image) -> dict[str, list[tuple]]:
    out = {}
    for q in ("building", "road", "water", "tree"):
        out[q] = sorted((r.extra.get("instance"), r.bbox, round(r.area_m2, 6), r.crop.tobytes())
                        for r in det.find(image, q))
    return out


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_backends_give_the_in_process_answer(mosaic, backend) -> None:
    image = open_region(mosaic)
    ref_det = RegionDetector(MosaicOracle(big_scene()), image, layout(image, 100.0, 16.0))
    ref_det.prepare(image, ["building", "road", "water", "tree"])
    ref = found(ref_det, image)
    started = False
    if backend == "ray":
        from viper_rs.index.build import connect_ray
        from viper_rs.region.scan import RayRunner

        started = connect_ray("local", num_cpus=2)
        runner = RayRunner(MosaicOracle(big_scene()), Settings(), image, 2)
    else:
        runner = ProcessRunner(MosaicOracle(big_scene()), Settings(), image, 2)
    try:
        det = RegionDetector(MosaicOracle(big_scene()), image, layout(image, 100.0, 16.0),
                             runner=runner)
        det.prepare(image, ["building", "road", "water"])  # tree: scanned at find time
        assert found(det, image) == ref
        assert [c.status for c in det.chips] == [c.status for c in ref_det.chips]
        assert [c.valid_m2 for c in det.chips] == [c.valid_m2 for c in ref_det.chips]
    finally:
        runner.close()
        if started:
            import ray

            ray.shutdown()
    assert len(ref["building"]) == n_buildings()
    assert {r[0] for r in ref["road"] + ref["water"]} == {
        o.id for o in big_scene().objects if o.cls in (ROAD, WATER)}


def test_ask_region_on_two_processes(mosaic) -> None:
    image = open_region(mosaic)
    one, rep1 = ask_region(image, QUESTION,
                           RegionOptions(chip_m=128.0, detector=MosaicOracle(big_scene()),
                                         planner="rules"))
    two, rep2 = ask_region(image, QUESTION,
                           RegionOptions(chip_m=128.0, detector=MosaicOracle(big_scene()),
                                         planner="rules", workers=2))
    assert one.value == two.value == n_buildings()
    assert rep2.coverage["backend"] == "2 processes"
    assert [c["status"] for c in rep1.chips] == [c["status"] for c in rep2.chips]


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_worker_dying_on_a_chip_is_retried_then_missing_coverage(mosaic, backend) -> None:
    image = open_region(mosaic)
    where = {"workers": 2} if backend == "processes" else {"workers": 2, "ray_address": "local"}
    if backend == "ray":  # Ray workers cannot import this test module: send the reader by value
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    answer, report = ask_region(image, QUESTION,
                                RegionOptions(chip_m=256.0, halo_m=0.0,
                                              detector=MosaicOracle(big_scene()), planner="rules",
                                              reader=dies_on_r1c1, **where))
    status = {c["id"]: c["status"] for c in report.chips}
    assert status["r1c1"] == "failed" and sum(s == "ok" for s in status.values()) == 8
    row = next(c for c in report.chips if c["id"] == "r1c1")
    assert "worker died" in row["reason"]
    assert report.coverage["partial"] and report.coverage["failed_chips"] == ["r1c1"]
    assert any("missing coverage" in n for n in answer.notes)
    assert answer.value is not None and answer.value < n_buildings()


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "viper_rs", "region", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_unreachable_ray_address_fails_fast(mosaic) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    p = _cli(*map(str, mosaic), "-q", QUESTION, "--detector", "spectral", "--planner", "rules",
             "--ray-address", f"127.0.0.1:{port}")
    assert p.returncode == 2 and "cannot reach the Ray cluster" in p.stderr
    assert time.monotonic() - t0 < 30


def test_killed_run_resumes_where_it_stopped(mosaic, tmp_path) -> None:
    args = [*map(str, mosaic), "-q", QUESTION, "--detector", "spectral", "--planner", "rules",
            "--chip-m", "32", "--halo-m", "8", "--json"]
    full = _cli(*args, "--no-progress")
    assert full.returncode == 0, full.stderr
    want = json.loads(full.stdout)

    folder = tmp_path / "run"
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, "-m", "viper_rs", "region", *args, "--resume",
                             str(folder)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob("*.npz"))) < 100:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    stored = len(list(folder.glob("*.npz")))
    assert 100 <= stored < 576

    again = _cli(*args, "--resume", str(folder))
    assert again.returncode == 0, again.stderr
    got = json.loads(again.stdout)
    assert got["answer"] == want["answer"] and got["value"] == want["value"]
    assert got["coverage"]["computed_chips"] + stored <= want["coverage"]["computed_chips"]
    assert got["coverage"]["scanned_m2"] == want["coverage"]["scanned_m2"]
    rows = [c for c in got["chips"] if isinstance(c, dict)]  # the JSON lists the first 100
    assert rows and all(c.get("resumed") for c in rows[:50])

    other = _cli(*args[:-1], "--chip-m", "48", "--resume", str(folder))
    assert other.returncode == 2 and "chip_m" in other.stderr
    other = _cli(*[a if a != QUESTION else "Is there a road?" for a in args], "--resume", str(folder))
    assert other.returncode == 2 and "question" in other.stderr


def test_chip_results_are_compact() -> None:
    from viper_rs.region.scan import QueryResult

    fg = np.zeros((64, 64), bool)
    fg[3:9, 5:20] = True
    scores = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    inst = np.where(fg, 7, 0)
    q = QueryResult.of("building", [], fg, scores, inst)
    assert q.packed.nbytes == 64 * 64 // 8 and q.scores.size == fg.sum()
    fg2, s2, i2 = q.arrays()
    assert np.array_equal(fg2, fg) and np.array_equal(i2, inst)
    assert np.array_equal(s2[fg], scores[fg].astype(np.float64)) and not s2[~fg].any()


class CutAware(MosaicOracle):
    """The mosaic oracle that says an object is cut by the read window until the window
    reaches ``wide`` pixels above the core (a detector with whole-object rules)."""

    def __init__(self, scene, wide: int) -> None:
        super().__init__(scene)
        self.wide, self.windows = wide, []

    def open_objects(self, image, core, cut, queries):
        self.windows.append(image.shape)
        return int(core[0] < self.wide and cut[0])


def test_a_chip_with_cut_objects_reads_a_wider_window(mosaic) -> None:
    """ContextSensitive detectors: the halo doubles (at most MAX_HALO_GROWTH times) while
    the detector sees objects cut by the read window; the answer is unchanged here (the
    oracle is exact) and the core's result comes from the widest read."""
    from viper_rs.core.detector import ContextSensitive
    from viper_rs.region.scan import MAX_HALO_GROWTH, run_chip

    image = open_region(mosaic)
    chips = layout(image, 200.0, 10.0)
    chip = next(c for c in chips if c.read[0] > 0 and c.status != "skipped")
    det = CutAware(big_scene(), wide=25)
    assert isinstance(det, ContextSensitive)
    res = run_chip(det, image, chip, ["building"])
    assert res.status == "ok" and res.grown == 2  # 10 px halo -> 20 -> 40 >= 25
    heights = [s[0] for s in det.windows]
    assert len(heights) == 3 and heights[0] < heights[1] < heights[2], heights
    plain = run_chip(MosaicOracle(big_scene()), image, chip, ["building"])
    assert plain.grown == 0
    np.testing.assert_array_equal(res.queries["building"].arrays()[0],
                                  plain.queries["building"].arrays()[0])
    det = CutAware(big_scene(), wide=10 ** 6)  # never satisfied: stops after the cap
    assert run_chip(det, image, chip, ["building"]).grown == MAX_HALO_GROWTH


def test_only_segment_rule_queries_make_a_chip_grow(mosaic) -> None:
    """Land-cover queries read bounded windows: they never ask for a wider read, and a
    routing detector asks its spectral part only about the queries it answers (a chip
    scanned for buildings alone computes no spectral maps)."""
    import torch

    from viper_rs.vision.buildings.detector import BuildingDetector
    from viper_rs.vision.buildings.model import BuildingNet, BuildingNetConfig
    from viper_rs.vision.routed import RoutedDetector
    from viper_rs.vision.spectral import SpectralDetector

    image = open_region(mosaic)
    chip = next(c for c in layout(image, 200.0, 10.0) if c.read[0] > 0 and c.status != "skipped")
    img = read_chip(image, chip)
    core, cut = (10, 10, 60, 60), (True, True, True, True)
    spectral = SpectralDetector()
    assert spectral.open_objects(img, core, cut, ["trees", "water area"]) == 0
    assert spectral.computations == 0
    spectral.open_objects(img, core, cut, ["road"])
    assert spectral.computations == 1
    torch.manual_seed(0)
    routed = RoutedDetector(SpectralDetector(),
                            BuildingDetector(model=BuildingNet(BuildingNetConfig(widths=(4, 8)))))
    assert routed.open_objects(img, core, cut, ["building"]) == 0
    assert routed.primary.computations == 0
