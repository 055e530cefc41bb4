"""``python -m eval.bench_region``: throughput, funnel cost and memory of region questions.

``python -m eval.bench_region [--km2 10] [--tiles 4] [--workers 2] [--top 10] [--skip-ray]
[--skip-real] [--skip-funnel] [--skip-memory] [--cores-per-node 16] [--json OUT]``

1. Throughput: ``ask_region`` with the spectral detector and the rule planner, for the
   questions in :data:`QUESTIONS` (a count and an area), in this process, on ``--workers``
   local processes and on a local Ray cluster (started once and timed apart as the
   backend's start-up; the Ray actors start inside each question's scan), on
   (a) the shared NAIP / aerial tiles (``../shared/data``; files whose footprints overlap
   form one place; skipped with a message when absent) and (b) a synthetic mosaic of about
   ``--km2`` km2: ``--tiles`` x ``--tiles`` adjacent synthetic scenes (one seed each)
   written as 1 m GeoTIFFs. Per run: total s, scan s, chips analysed, km2 scanned, chips/s
   and km2/s (over the total).
2. Funnel: a spectral chip index (256 m chips, 25% overlap) over the synthetic mosaic; each
   question asked with ``index=..., top=--top`` against the full in-process scan: chips
   analysed, seconds and answers.
3. Memory: the full in-process scan of 1 x 1, k x k and ``--tiles`` x ``--tiles`` tiles of
   the mosaic, each in a fresh subprocess: the child's peak RSS and the growth of its RSS
   during the scan, per km2 and per building found.
4. Scale estimate on paper: from the measured spectral cost per chip (scaled to 0.6 m
   pixels) and docs/benchmarks.md's measured CPU costs of GRAFT and SAM, the time for a US county
   and a US state on N-node Ray clusters, with and without GPUs (the GPU speed-up is an
   assumption, see :data:`GPU_SPEEDUPS`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = ("How many buildings are there?", "What is the area covered by buildings?")
CHIP_M, HALO_M = 256.0, 64.0
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Shared real imagery, by folder (only rasters with at least 3 bands are used).
REAL_GLOBS = ("naip/*.tif", "naip/north_dakota/*.tif", "aerial/*.tif")
BACKENDS = ("in-process", "processes", "ray local")
#: docs/benchmarks.md's ``python -m eval.bench`` CPU figures (2-core CPU, real-size models on a
#: 500 x 500 px image): GRAFT ViT-B/16 image tower per window and windows per image, SAM
#: ViT-B image embedding per image (one 1024 px input), SAM decoding per region.
GRAFT_WINDOW_S, GRAFT_WINDOWS_PER_500PX = 0.307, 9
SAM_EMBED_S, SAM_DECODE_S = 19.6, 0.117
#: Assumed regions SAM decodes per chip (an assumption for the estimate).
SAM_REGIONS_PER_CHIP = 10
#: Assumed speed-up of the deep models on one GPU over one CPU core (not measured here).
GPU_SPEEDUPS = (20.0, 50.0)
AREAS_KM2 = {"US county": 2_000.0, "US state": 150_000.0}
NODES = (1, 10, 100)
NAIP_M = 0.6


def _say(msg: str) -> None:
    """Progress on stderr (the default run takes minutes)."""
    print(f"[bench_region {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- data
def tile_px(km2: float, tiles: int) -> int:
    """Side (px at 1 m) of each of ``tiles`` x ``tiles`` tiles covering about ``km2``
    (a multiple of 32, at least 64)."""
    side = math.sqrt(km2 * 1e6) / tiles
    return max(64, int(math.ceil(side / 32.0)) * 32)


def write_mosaic(folder: Path, tiles: int, px: int) -> list[Path]:
    """``tiles`` x ``tiles`` adjacent synthetic scenes of ``px`` px at 1 m (seed per tile)
    written as ``tile_{i}_{j}.tif``; the object density is that of one scene."""
    from affine import Affine

    from viper_rs.core.geo import GeoImage
    from viper_rs.core.raster_write import write_geotiff
    from viper_rs.synthetic import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    x0, y0 = None, None
    for i in range(tiles):
        for j in range(tiles):
            scene = make_scene(i * tiles + j, size=px, gsd=1.0)
            img = scene.image
            if x0 is None:
                x0, y0 = img.transform.c, img.transform.f
            transform = Affine(1.0, 0.0, x0 + j * px, 0.0, -1.0, y0 - i * px)
            tile = GeoImage.from_array(img.data, "R,G,B,NIR", crs=img.crs, transform=transform)
            paths.append(write_geotiff(tile, folder / f"tile_{i}_{j}.tif"))
    return paths


def real_places(root: Path = SHARED) -> dict[str, list[Path]]:
    """The shared real tiles with at least 3 bands, grouped by place (files of a folder
    whose footprints overlap form one place); empty when the folder is absent."""
    import rasterio
    from shapely.geometry import box

    places: dict[str, list[Path]] = {}
    for pattern in REAL_GLOBS:
        groups: list[tuple[Any, list[Path]]] = []
        for path in sorted(root.glob(pattern)):
            try:
                with rasterio.open(path) as ds:
                    if ds.count < 3:
                        continue
                    fp = box(*ds.bounds)
                    crs = str(ds.crs)
            except Exception:  # noqa: BLE001 - unreadable files are not benchmarked
                continue
            for g in groups:
                if g[0][0] == crs and g[0][1].intersects(fp):
                    g[1].append(path)
                    break
            else:
                groups.append(((crs, fp), [path]))
        folder = pattern.rsplit("/", 1)[0].replace("/", "_")
        for _, paths in groups:
            name = folder if len(groups) == 1 else f"{folder}/{paths[0].stem}"
            places[name] = paths
    return places


# ---------------------------------------------------------------------------- runs
def ask(sources: Any, question: str, **kw: Any) -> dict[str, Any]:
    """One region question (spectral detector, rule planner): its figures."""
    from viper_rs.region import RegionOptions, ask_region

    t0 = time.perf_counter()
    answer, report = ask_region(sources, question, RegionOptions(
        chip_m=CHIP_M, halo_m=HALO_M, detector="spectral", planner="rules", **kw))
    total = time.perf_counter() - t0
    cov = report.coverage
    km2 = cov["scanned_m2"] / 1e6
    chips = int(cov["computed_chips"])
    out = {"question": question, "total_s": round(total, 3), "scan_s": cov["scan_s"],
           "chips": chips, "chips_in_area": len(report), "km2": round(km2, 4),
           "chips_per_s": round(chips / total, 2) if total else None,
           "km2_per_s": round(km2 / total, 4) if total else None,
           "answer": answer.answer, "value": answer.value, "error": answer.error,
           "runner": cov["backend"]}
    if "funnel" in cov:
        out["funnel"] = {k: cov["funnel"][k] for k in ("concepts", "selected_chips",
                                                       "chips_in_area", "selected_share")}
    return out


def warm_up(source: Path) -> None:
    """Pay this process's one-off costs (imports, first class maps) before any timing."""
    ask([source], QUESTIONS[0])


def bench_backends(datasets: dict[str, list[Path]], backends: tuple[str, ...],
                   workers: int) -> list[dict[str, Any]]:
    """Every question on every dataset with every backend; Ray is started once per run
    (``startup_s``) and stopped after (``shutdown_s``)."""
    from viper_rs.region import open_region

    rows: list[dict[str, Any]] = []
    for backend in backends:
        kw: dict[str, Any] = {}
        startup = shutdown = None
        if backend == "processes":
            kw = {"workers": workers}
        elif backend == "ray local":
            from viper_rs.index.build import connect_ray

            t0 = time.perf_counter()
            connect_ray("local", num_cpus=workers)
            startup = round(time.perf_counter() - t0, 2)
            kw = {"workers": workers, "ray_address": "local"}
        try:
            for name, paths in datasets.items():
                image = open_region(paths)
                for q in QUESTIONS:
                    _say(f"{backend}: {name}: {q}")
                    r = ask(image, q, **kw)
                    rows.append({"dataset": name, "backend": backend, "startup_s": startup, **r})
        finally:
            if backend == "ray local":
                import ray

                t0 = time.perf_counter()
                ray.shutdown()
                shutdown = round(time.perf_counter() - t0, 2)
                for r in rows:
                    if r["backend"] == backend:
                        r["shutdown_s"] = shutdown
    return rows


def bench_funnel(folder: Path, work: Path, top: int,
                 full: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Index the mosaic (spectral, 256 m chips, 25% overlap) and ask each question with
    ``index, top`` next to the full scan (``full``: question -> in-process figures, run
    here when missing)."""
    from viper_rs.index import ChipGrid, build_index
    from viper_rs.region import open_region

    _say("funnel: building the spectral index")
    t0 = time.perf_counter()
    r = build_index([folder], work / "index", embedder="spectral",
                    grid=ChipGrid(chip_m=256.0, overlap=0.25), progress=False, overlays=False)
    build_s = round(time.perf_counter() - t0, 2)
    image = open_region(sorted(folder.glob("*.tif")))
    runs = []
    for q in QUESTIONS:
        ref = full.get(q) or ask(image, q)
        _say(f"funnel: top {top}: {q}")
        got = ask(image, q, index=work / "index", top=top)
        runs.append({"question": q, "full": ref, "funnel": got,
                     "chips_ratio": round(got["chips"] / ref["chips"], 4) if ref["chips"] else None,
                     "time_ratio": round(got["total_s"] / ref["total_s"], 4) if ref["total_s"] else None})
    return {"index_chips": r.chips, "index_build_s": build_s, "index_chip_m": 256.0,
            "index_overlap": 0.25, "top": top, "runs": runs}


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in KB; 0 when absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_child(folder: Path, k: int) -> dict[str, Any]:
    """In a fresh process: the full in-process scan of the top-left ``k`` x ``k`` tiles;
    the RSS before the scan (modules imported, no pixel read) and the scan's own peak (the
    high-water mark is reset before the scan where Linux allows it)."""
    import viper_rs.agent.loop  # noqa: F401 - imported before the RSS is read
    from viper_rs.core.config import Settings
    from viper_rs.region import open_region
    from viper_rs.vision.factory import build_detector

    build_detector("spectral", Settings())
    image = open_region([folder / f"tile_{i}_{j}.tif" for i in range(k) for j in range(k)])
    before = _status_kb("VmRSS")
    setup_peak = _status_kb("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    values = {}
    for q in QUESTIONS:
        r = ask(image, q)
        values[q] = r["value"]
    return {"tiles": k * k, "km2": r["km2"], "chips": r["chips"], "rss_before_scan_kb": before,
            "setup_peak_kb": setup_peak, "scan_peak_kb": _status_kb("VmHWM") if reset else None,
            "values": values}


def bench_memory(folder: Path, tiles: int) -> list[dict[str, Any]]:
    """Peak RSS of the full scan of 1, (tiles/2)^2 and tiles^2 tiles, one child each: the
    child's whole peak (its VmHWM; ``os.wait4``'s ru_maxrss kept as ``ru_maxrss_mb``) and
    the growth of its RSS during the scan."""
    sizes = sorted({1, max(1, tiles // 2), tiles})
    out = []
    for k in sizes:
        _say(f"memory: {k} x {k} tiles in a subprocess")
        cmd = [sys.executable, "-m", "eval.bench_region", "--memory-child", str(folder),
               "--memory-k", str(k)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        stdout = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child for {k} x {k} tiles failed ({proc.returncode})")
        row = json.loads(stdout.strip().splitlines()[-1])
        before_mb = row.pop("rss_before_scan_kb") / 1024.0
        scan_peak = row.pop("scan_peak_kb")
        # the child's own high-water mark since exec; ru_maxrss also counts the pages of
        # this (large) process the child shared between fork and exec
        peak_mb = max(row.pop("setup_peak_kb"), scan_peak or 0) / 1024.0 or usage.ru_maxrss / 1024.0
        row["ru_maxrss_mb"] = round(usage.ru_maxrss / 1024.0, 1)
        buildings = row["values"].get(QUESTIONS[0])
        row.update(seconds=round(time.perf_counter() - t0, 2), peak_rss_mb=round(peak_mb, 1),
                   rss_before_scan_mb=round(before_mb, 1), buildings=buildings)
        growth = (scan_peak / 1024.0 if scan_peak else peak_mb) - before_mb
        row["scan_rss_mb"] = round(growth, 1)
        row["peak_mb_per_km2"] = round(peak_mb / row["km2"], 1) if row["km2"] else None
        row["scan_mb_per_km2"] = round(growth / row["km2"], 1) if row["km2"] else None
        row["scan_kb_per_building"] = (round(1024 * growth / buildings, 1)
                                       if isinstance(buildings, int) and buildings else None)
        out.append(row)
    return out


# ---------------------------------------------------------------------------- estimate
def scale_estimate(spectral_chip_s: float, cores_per_node: int, gpus_per_node: int = 1,
                   chip_m: float = CHIP_M, halo_m: float = HALO_M,
                   measured_m: float = 1.0) -> dict[str, Any]:
    """Time for a county and a state of 0.6 m NAIP on 1, 10 and 100 nodes: chips x cost per
    chip / (nodes x cores) (GPU runs: nodes x ``gpus_per_node``). ``spectral_chip_s`` is the
    measured spectral cost of one chip at ``measured_m`` m/px, scaled by pixel count."""
    side_px = (chip_m + 2 * halo_m) / NAIP_M
    px_per_km2 = 1e6 / NAIP_M ** 2
    chips_per_km2 = 1e6 / chip_m ** 2
    spectral = spectral_chip_s * (measured_m / NAIP_M) ** 2
    windows = GRAFT_WINDOWS_PER_500PX * side_px ** 2 / 500.0 ** 2
    deep_cpu = windows * GRAFT_WINDOW_S + SAM_EMBED_S + SAM_REGIONS_PER_CHIP * SAM_DECODE_S
    costs = {"spectral (CPU)": (spectral, "cores"), "GRAFT+SAM (CPU)": (deep_cpu, "cores")}
    for s in GPU_SPEEDUPS:
        costs[f"GRAFT+SAM (GPU, {s:g}x assumed)"] = (deep_cpu / s, "gpus")
    rows = []
    for area_name, km2 in AREAS_KM2.items():
        chips = km2 * chips_per_km2
        for model, (cost, unit) in costs.items():
            per_node = cores_per_node if unit == "cores" else gpus_per_node
            hours = {n: chips * cost / (n * per_node) / 3600.0 for n in NODES}
            rows.append({"area": area_name, "km2": km2, "chips": round(chips),
                         "pixels": km2 * px_per_km2, "model": model,
                         "chip_s": round(cost, 4), "parallel_per_node": per_node,
                         "hours": {str(n): round(h, 3) for n, h in hours.items()}})
    return {"naip_m": NAIP_M, "pixels_per_km2": round(px_per_km2), "chip_m": chip_m,
            "halo_m": halo_m, "chip_side_px": round(side_px), "chips_per_km2": round(chips_per_km2, 2),
            "spectral_chip_s_measured": round(spectral_chip_s, 4), "measured_m": measured_m,
            "graft_windows_per_chip": round(windows, 1),
            "deep_cpu_chip_s": round(deep_cpu, 2), "sam_regions_per_chip": SAM_REGIONS_PER_CHIP,
            "cores_per_node": cores_per_node, "gpus_per_node": gpus_per_node,
            "gpu_speedups_assumed": list(GPU_SPEEDUPS), "rows": rows}


# ---------------------------------------------------------------------------- report
def run(km2: float = 10.0, tiles: int = 4, workers: int = 2, top: int = 10,
        skip_ray: bool = False, skip_real: bool = False, skip_funnel: bool = False,
        skip_memory: bool = False, cores_per_node: int = 16) -> dict[str, Any]:
    """Every measurement; returns the figures."""
    backends = tuple(b for b in BACKENDS if not (skip_ray and b.startswith("ray")))
    out: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                       "cpus": os.cpu_count(), "platform": platform.platform()},
                           "questions": list(QUESTIONS), "chip_m": CHIP_M, "halo_m": HALO_M,
                           "detector": "spectral", "planner": "rules", "workers": workers,
                           "backends": list(backends)}
    with tempfile.TemporaryDirectory(prefix="bench_region_") as tmp:
        folder = Path(tmp) / "mosaic"
        px = tile_px(km2, tiles)
        t0 = time.perf_counter()
        _say(f"writing {tiles} x {tiles} synthetic tiles of {px} px")
        paths = write_mosaic(folder, tiles, px)
        out["synthetic"] = {"tiles": tiles * tiles, "tile_px": px, "gsd_m": 1.0,
                            "km2": round((tiles * px) ** 2 / 1e6, 4),
                            "write_s": round(time.perf_counter() - t0, 2)}
        datasets: dict[str, list[Path]] = {}
        if skip_real:
            out["real"] = {"skipped": "--skip-real"}
        else:
            places = real_places()
            if places:
                out["real"] = {k: [str(p) for p in v] for k, v in places.items()}
                datasets.update(places)
            else:
                msg = f"no shared imagery under {SHARED}: real tiles skipped"
                _say(msg)
                out["real"] = {"skipped": msg}
        datasets["synthetic"] = paths
        warm_up(paths[0])
        out["runs"] = bench_backends(datasets, backends, workers)
        full = {r["question"]: r for r in out["runs"]
                if r["dataset"] == "synthetic" and r["backend"] == "in-process"}
        if not skip_funnel:
            out["funnel"] = bench_funnel(folder, Path(tmp), top, full)
        if not skip_memory:
            out["memory"] = bench_memory(folder, tiles)
    ref = full.get(QUESTIONS[0])
    chip_s = ref["scan_s"] / ref["chips"] if ref and ref["chips"] else float("nan")
    out["scale"] = scale_estimate(chip_s, cores_per_node)
    return out


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def tables(r: dict[str, Any]) -> str:
    """The figures as text tables."""
    lines = [f"synthetic mosaic: {r['synthetic']['tiles']} tiles of {r['synthetic']['tile_px']} px "
             f"at 1 m = {r['synthetic']['km2']} km2; chips {r['chip_m']:g} m + {r['halo_m']:g} m "
             f"halo; spectral detector, rule planner"]
    if "skipped" in r.get("real", {}):
        lines.append(f"real tiles: {r['real']['skipped']}")
    lines += ["", f"{'dataset':30}{'backend':12}{'question':10}{'start s':>8}{'total s':>9}"
              f"{'scan s':>8}{'chips':>7}{'km2':>8}{'chips/s':>9}{'km2/s':>8}  answer"]
    for x in r["runs"]:
        q = "count" if x["question"] == QUESTIONS[0] else "area"
        lines.append(f"{x['dataset'][:29]:30}{x['runner']:12}{q:10}{_fmt(x['startup_s'], '.2f'):>8}"
                     f"{x['total_s']:>9.2f}{x['scan_s']:>8.2f}{x['chips']:>7}{x['km2']:>8.3f}"
                     f"{_fmt(x['chips_per_s'], '.1f'):>9}{_fmt(x['km2_per_s'], '.3f'):>8}  {x['answer']}")
    f = r.get("funnel")
    if f:
        lines += ["", f"funnel: spectral index of {f['index_chips']} chips built in "
                  f"{f['index_build_s']} s; top {f['top']} vs full scan (in-process)",
                  f"{'question':10}{'full chips':>11}{'full s':>8}{'full answer':>16}"
                  f"{'funnel chips':>13}{'funnel s':>9}{'funnel answer':>16}"]
        for x in f["runs"]:
            q = "count" if x["question"] == QUESTIONS[0] else "area"
            lines.append(f"{q:10}{x['full']['chips']:>11}{x['full']['total_s']:>8.2f}"
                         f"{x['full']['answer']:>16}{x['funnel']['chips']:>13}"
                         f"{x['funnel']['total_s']:>9.2f}{x['funnel']['answer']:>16}")
    m = r.get("memory")
    if m:
        lines += ["", "memory (full in-process scan, both questions, one subprocess each)",
                  f"{'tiles':>6}{'km2':>8}{'chips':>7}{'buildings':>10}{'peak MB':>9}"
                  f"{'before MB':>10}{'scan MB':>8}{'peak MB/km2':>12}{'scan MB/km2':>12}"
                  f"{'scan KB/bldg':>13}"]
        for x in m:
            lines.append(f"{x['tiles']:>6}{x['km2']:>8.2f}{x['chips']:>7}{_fmt(x['buildings']):>10}"
                         f"{x['peak_rss_mb']:>9.1f}{x['rss_before_scan_mb']:>10.1f}"
                         f"{x['scan_rss_mb']:>8.1f}{_fmt(x['peak_mb_per_km2']):>12}"
                         f"{_fmt(x['scan_mb_per_km2']):>12}{_fmt(x['scan_kb_per_building']):>13}")
    s = r["scale"]
    lines += ["", f"scale estimate (on paper): {NAIP_M} m NAIP = {s['pixels_per_km2']:,} px/km2; "
              f"{s['chip_m']:g} m chips = {s['chips_per_km2']} chips/km2 ({s['chip_side_px']} px "
              f"with halo); spectral {s['spectral_chip_s_measured']} s/chip at 1 m measured, x"
              f"{(1 / NAIP_M) ** 2:.2f} for 0.6 m pixels; GRAFT+SAM on CPU {s['deep_cpu_chip_s']} "
              f"s/chip ({s['graft_windows_per_chip']} GRAFT windows, 1 SAM embedding, "
              f"{s['sam_regions_per_chip']} SAM decodes; docs/benchmarks.md eval.bench figures); "
              f"{s['cores_per_node']} cores or {s['gpus_per_node']} GPU per node; GPU speed-ups "
              f"are assumptions",
              f"{'area':11}{'chips':>11}{'model':>34}{'s/chip':>9}"
              + "".join(f"{f'{n} node' + ('s' if n > 1 else '') + ' h':>14}" for n in NODES)]
    for x in s["rows"]:
        lines.append(f"{x['area']:11}{x['chips']:>11,}{x['model']:>34}{x['chip_s']:>9.3f}"
                     + "".join(f"{x['hours'][str(n)]:>14,.2f}" for n in NODES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--km2", type=float, default=10.0, help="synthetic mosaic area (km2)")
    p.add_argument("--tiles", type=int, default=4, help="synthetic tiles per side")
    p.add_argument("--workers", type=int, default=2, help="local processes and Ray actors")
    p.add_argument("--top", type=int, default=10, help="index chips per concept (funnel)")
    p.add_argument("--cores-per-node", type=int, default=16, help="for the scale estimate")
    p.add_argument("--skip-ray", action="store_true", help="no Ray runs")
    p.add_argument("--skip-real", action="store_true", help="no shared real tiles")
    p.add_argument("--skip-funnel", action="store_true", help="no index / funnel runs")
    p.add_argument("--skip-memory", action="store_true", help="no memory subprocesses")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--memory-k", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.memory_k)))
        return 0
    if args.tiles < 1 or args.km2 <= 0:
        p.error("--tiles must be at least 1 and --km2 positive")
    r = run(args.km2, args.tiles, args.workers, args.top, args.skip_ray, args.skip_real,
            args.skip_funnel, args.skip_memory, args.cores_per_node)
    print(tables(r))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
