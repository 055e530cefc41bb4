"""``python -m eval.bench_region_cost``: the region cost estimate against measured runs.

``python -m eval.bench_region_cost [--cases NAME,...] [--dry] [--json OUT]``

Each case is one ``python -m viper_rs region ... --json`` run on real imagery from
``../shared/data`` (North Dakota NAIP 5 m, Napa NAIP 1 m, SpaceNet aerial 1 m,
OpenAerialMap drone tiles 0.149 m), at its own pixel size or resampled (``--gsd``), with
the spectral detector or ``auto`` (BuildingNet for buildings, spectral for the rest), in
a fresh subprocess whose process tree's summed proportional set size (PSS, from
``/proc/PID/smaps_rollup``; shared library pages counted once) is sampled every 50 ms.
A second subprocess per case measures the spectral statistics pass alone
(:func:`viper_rs.region.context.with_region_stats`: its time and peak RSS above the
process before it).

Printed per case: the estimate (:func:`viper_rs.region.cost.estimate_region`: pixels
read, statistics pixels, chips, memory, seconds) next to the measured peak memory and wall
time, and their ratio; then the per-pixel constants the runs imply (least squares), which
is where the constants in :mod:`viper_rs.region.cost` come from. ``--dry`` prints only the
estimates. The machine's load moves the times: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ND = "naip/north_dakota/m_4709963_se_14_1_20140720.tif"
#: About 1 km2 and 0.25 km2 inside the North Dakota tile (W,S,E,N).
BOX_1KM2 = "-99.16,47.01,-99.147,47.019"
BOX_QUARTER = "-99.16,47.01,-99.1535,47.0145"
WATER = "How many water areas are there?"
BUILDINGS = "How many buildings are there?"


@dataclass(frozen=True)
class Case:
    """One measured run: sources (relative to the shared data), box, pixel size (m),
    detector, question, chip side (m), workers."""

    name: str
    sources: tuple[str, ...]
    bbox: str | None = None
    pixel_m: float | None = None
    detector: str = "spectral"
    question: str = WATER
    chip_m: float = 256.0
    workers: int = 1


CASES = (
    Case("nd-5m", (ND,)),
    Case("nd-2m", (ND,), None, 2.0),
    Case("nd-1km2-1m", (ND,), BOX_1KM2, 1.0),
    Case("nd-1km2-0.5m", (ND,), BOX_1KM2, 0.5),
    Case("nd-1km2-0.5m-chip128", (ND,), BOX_1KM2, 0.5, chip_m=128.0),
    Case("nd-1km2-0.3m", (ND,), BOX_1KM2, 0.3),
    Case("nd-quarter-0.149m", (ND,), BOX_QUARTER, 0.149),
    Case("napa-1m", ("naip/napa_naip_1m.tif",)),
    Case("aerial-ms1-1m", ("aerial/ms1.tif",)),
    Case("zanzibar-0.149m", ("labeled/oam_osm_buildings",), "39.239,-6.046,39.246,-6.041"),
    Case("nd-1km2-1m-2workers", (ND,), BOX_1KM2, 1.0, workers=2),
    Case("auto-nd-1km2-1m-buildings", (ND,), BOX_1KM2, 1.0, "auto", BUILDINGS),
    Case("auto-nd-1km2-0.5m-buildings", (ND,), BOX_1KM2, 0.5, "auto", BUILDINGS),
    Case("auto-nd-quarter-0.3m-buildings", (ND,), BOX_QUARTER, 0.3, "auto", BUILDINGS),
    Case("auto-zanzibar-0.149m-buildings", ("labeled/oam_osm_buildings",),
         "39.239,-6.046,39.246,-6.041", None, "auto", BUILDINGS),
    Case("auto-nd-1km2-0.5m-water", (ND,), BOX_1KM2, 0.5, "auto", WATER),
    Case("auto-napa-1m-buildings", ("naip/napa_naip_1m.tif",), None, None, "auto", BUILDINGS),
)


def _paths(case: Case) -> list[str]:
    return [str(SHARED / s) for s in case.sources]


def estimate(case: Case) -> dict[str, Any]:
    """The library's estimate for ``case`` (concepts from the rule planner)."""
    from viper_rs.core.config import Settings
    from viper_rs.region import RegionOptions, estimate_question

    settings = Settings.from_env(detector=case.detector, planner="rules")
    cost, _ = estimate_question(_paths(case), case.question, RegionOptions(
        bbox=case.bbox, chip_m=case.chip_m, settings=settings, pixel_m=case.pixel_m,
        workers=case.workers))
    return cost.to_dict()


# ----------------------------------------------------------------------------- measuring
def _pss(pid: int) -> int:
    """Proportional set size of one process (bytes; 0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and every process descending from it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(p for p, pp in parents.items() if pp == pid)
    return out


def run_sampled(cmd: list[str], period: float = 0.05) -> dict[str, Any]:
    """Run ``cmd``; its wall time, CPU time (user + system of the whole tree), peak summed
    PSS of its process tree, exit code and output."""
    t0 = time.perf_counter()
    before = os.times()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            total = sum(_pss(p) for p in _tree(proc.pid))
            peak[0] = max(peak[0], total)
            done.wait(period)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    after = os.times()
    return {"wall_s": time.perf_counter() - t0,
            "cpu_s": (after.children_user - before.children_user)
            + (after.children_system - before.children_system),
            "peak_bytes": peak[0], "code": proc.returncode, "stdout": out, "stderr": err}


_STATS_CHILD = r"""
import json, resource, sys, time
from viper_rs.core.config import Settings
from viper_rs.region import open_region
from viper_rs.region.context import with_region_stats
from viper_rs.vision.factory import build_detector
paths, bbox, pixel_m, detector = json.loads(sys.argv[1])
image = open_region(paths, bbox, pixel_m)
det = build_detector(detector, Settings(detector=detector))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0, c0 = time.perf_counter(), time.process_time()
with_region_stats(det, image)
dt, dc = time.perf_counter() - t0, time.process_time() - c0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base_bytes": base, "stats_peak_bytes": peak, "stats_s": dt, "stats_cpu_s": dc}))
"""


_CHIP_CHILD = r"""
import json, sys, threading, time
from viper_rs.core.config import Settings
from viper_rs.region import open_region
from viper_rs.tiling.chips import Chip
from viper_rs.region.scan import run_chip
from viper_rs.region.context import with_region_stats
from viper_rs.vision.factory import build_detector

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

paths, pixel_m, detector, query = json.loads(sys.argv[1])
image = open_region(paths, None, pixel_m)
det = with_region_stats(build_detector(detector, Settings(detector=detector)), image)
srcs = tuple(image.sources)
run_chip(det, image, Chip("warm", (0, 0), (0, 0, 64, 64), (0, 0, 64, 64), srcs), [query])
h, w = image.shape
chip = Chip("all", (0, 0), (0, 0, h, w), (0, 0, h, w), srcs)  # the whole grid: never grows
peak, done = [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.01)
base = rss()
thread = threading.Thread(target=sample, daemon=True)
thread.start()
c0, t0 = time.process_time(), time.perf_counter()
res = run_chip(det, image, chip, [query])
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
done.set(); thread.join()
q = res.queries[query]
print(json.dumps({"px": h * w, "bytes": max(peak[0], rss()) - base, "cpu_s": cpu,
                  "wall_s": wall, "detector": q.detector, "status": res.status}))
"""

#: Whole North Dakota tiles analysed as one chip at these pixel sizes (m), per detector
#: and concept: what one chip in flight costs per pixel.
CHIP_PROBES = (
    ("spectral", "water area", (5.0, 2.5, 1.5, 1.0)),
    ("auto", "building", (1.2, 1.0, 0.8)),
)


def probe_chips() -> list[dict[str, Any]]:
    """One chip in flight, per pixel: bytes above the process before it (VmRSS sampled
    every 10 ms) and CPU seconds, for :data:`CHIP_PROBES` (the whole grid as one chip, so
    its window never grows)."""
    rows = []
    for detector, query, sizes in CHIP_PROBES:
        for pixel_m in sizes:
            r = subprocess.run([sys.executable, "-c", _CHIP_CHILD,
                                json.dumps([[str(SHARED / ND)], pixel_m, detector, query])],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            out = json.loads(r.stdout)
            model_px = out["px"] * ((pixel_m / 0.3) ** 2 if out["detector"] == "buildingnet" else 1)
            row = {"detector": out["detector"], "query": query, "pixel_m": pixel_m, **out,
                   "bytes_per_px": out["bytes"] / model_px,
                   "cpu_s_per_mpx": out["cpu_s"] / (model_px / 1e6)}
            print(f"chip probe {row['detector']:12s} {query:9s} {pixel_m:4.1f} m "
                  f"{out['px'] / 1e6:6.2f} Mpx (model {model_px / 1e6:6.2f}): "
                  f"{out['bytes'] / 1e6:7.0f} MB = {row['bytes_per_px']:6.1f} B/px, cpu "
                  f"{out['cpu_s']:6.1f} s = {row['cpu_s_per_mpx']:5.2f} s/Mpx", flush=True)
            rows.append(row)
    return rows


def startup(detector: str) -> dict[str, Any]:
    """A ``--estimate`` run (imports, the detector loaded, the question planned, the
    sources opened; no chip read): the fixed cost of a run with ``detector``."""
    r = run_sampled([sys.executable, "-m", "viper_rs", "region", str(SHARED / ND), "-q", WATER,
                     "--detector", detector, "--planner", "rules", "--estimate"])
    return {"startup_s": round(r["wall_s"], 2), "startup_cpu_s": round(r["cpu_s"], 2),
            "base_mb": round(r["peak_bytes"] / 1e6, 1)}


def measure(case: Case) -> dict[str, Any]:
    """The case's full CLI run and its statistics pass alone, each in a fresh process."""
    cmd = [sys.executable, "-m", "viper_rs", "region", *_paths(case), "-q", case.question,
           "--detector", case.detector, "--planner", "rules", "--json", "--no-progress",
           "--chip-m", str(case.chip_m), "--workers", str(case.workers),
           "--max-memory-mb", "1000000", "--max-time-s", "1000000"]
    if case.bbox:
        cmd.append(f"--bbox={case.bbox}")
    if case.pixel_m:
        cmd += ["--gsd", str(case.pixel_m)]
    full = run_sampled(cmd)
    if full["code"] != 0:
        raise RuntimeError(f"{case.name}: exit {full['code']}: {full['stderr'][-2000:]}")
    answer = json.loads(full["stdout"])
    stats = run_sampled([sys.executable, "-c", _STATS_CHILD,
                         json.dumps([_paths(case), case.bbox, case.pixel_m, case.detector])])
    st = json.loads(stats["stdout"]) if stats["code"] == 0 else {}
    return {"wall_s": round(full["wall_s"], 2), "cpu_s": round(full["cpu_s"], 2),
            "peak_mb": round(full["peak_bytes"] / 1e6, 1), "answer": answer.get("answer"),
            "scan_s": answer.get("coverage", {}).get("scan_s"),
            "chips_computed": answer.get("coverage", {}).get("computed_chips"),
            "stats_s": round(st.get("stats_s", float("nan")), 2),
            "stats_cpu_s": round(st.get("stats_cpu_s", float("nan")), 2),
            "stats_base_mb": round(st.get("base_bytes", 0) / 1e6, 1),
            "stats_peak_mb": round(st.get("stats_peak_bytes", 0) / 1e6, 1)}


# ----------------------------------------------------------------------------- report
def fit(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-pixel constants the measured runs imply (least squares through the origin)."""
    out: dict[str, float] = {}
    st = [r for r in rows if r["est"]["stats_pixels"] and r["stats_s"] == r["stats_s"]]
    if st:
        x = np.array([r["est"]["stats_pixels"] / 1e6 for r in st])
        y = np.array([r["stats_cpu_s"] for r in st])
        out["STATS_S_PER_MPX"] = float(x @ y / (x @ x))
        xm = np.array([r["est"]["stats_pixels"] for r in st], float)
        ym = np.array([(r["stats_peak_mb"] - r["stats_base_mb"]) * 1e6 for r in st])
        out["stats bytes per px (incl. raw bands)"] = float(xm @ ym / (xm @ xm))
    for r in rows:
        est = r["est"]
        above = (r["peak_mb"] - r["base_mb"]) * 1e6 - est["memory_parts"]["results"]
        out[f"{r['case']['name']}: scan peak above base, bytes per px of the largest chip"] = (
            above / max(est["largest_chip_pixels"], 1))
    for part in ("spectral", "buildingnet"):
        sel = [r for r in rows if r["est"]["parts"] == [part] or
               (part == "buildingnet" and r["est"]["parts"] == ["buildingnet"])]
        if not sel:
            continue
        scale = [(r["est"]["pixel_m"] / 0.3) ** 2 if part == "buildingnet" else 1.0 for r in sel]
        x = np.array([r["est"]["read_pixels"] / 1e6 * s for r, s in zip(sel, scale, strict=True)])
        y = np.array([max(r["cpu_s"] - r["stats_cpu_s"] - r["startup_cpu_s"], 0.0)
                      for r in sel])
        out[f"{part} CPU s per Mpx"] = float(x @ y / (x @ x))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the cases; print the table and the constants they imply."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--dry", action="store_true", help="estimates only, nothing run")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--probes", action="store_true",
                    help="only the one-chip probes (bytes and CPU s per pixel in flight)")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"the shared data folder {SHARED} is absent", file=sys.stderr)
        return 1
    if args.probes:
        rows = probe_chips()
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    wanted = set(args.cases.split(",")) if args.cases else None
    rows = []
    starts: dict[str, dict[str, Any]] = {}
    for case in CASES:
        if wanted and case.name not in wanted:
            continue
        est = estimate(case)
        row: dict[str, Any] = {"case": case.__dict__, "est": est}
        line = (f"{case.name:34s} grid {est['width']}x{est['height']} read "
                f"{est['read_pixels'] / 1e6:7.1f} Mpx stats {est['stats_pixels'] / 1e6:6.1f} Mpx "
                f"chips {est['chips']:4d} est {est['memory_bytes'] / 1e6:7.0f} MB "
                f"{est['seconds']:7.1f} s")
        if not args.dry:
            if case.detector not in starts:
                starts[case.detector] = startup(case.detector)
                print(f"startup {case.detector}: {starts[case.detector]}", flush=True)
            row.update(starts[case.detector])
            row.update(measure(case))
            line += (f" | measured {row['peak_mb']:7.0f} MB {row['wall_s']:7.1f} s (cpu "
                     f"{row['cpu_s']:.1f}; stats {row['stats_s']:.1f} s, "
                     f"{row['stats_peak_mb'] - row['stats_base_mb']:.0f} MB) | est/measured "
                     f"memory {est['memory_bytes'] / 1e6 / row['peak_mb']:.2f} time "
                     f"{est['seconds'] / row['wall_s']:.2f}")
        print(line, flush=True)
        rows.append(row)
    if not args.dry and rows:
        for k, v in fit(rows).items():
            print(f"fit: {k} = {v:.3g}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
