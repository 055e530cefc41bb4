"""What a question about a region will cost, known before any chip is read, and the budget
that refuses the ones that cost too much (issue 22).

:func:`estimate_region` counts, from the working grid alone (no pixel is read), the
pixels the run will read (chip cores with their halos, and the spectral statistics pass),
the chips, the peak memory of every process of the run and the time, from per-pixel
constants measured on real imagery (:data:`DETECTOR_COSTS` and the ``STATS_*`` /
``RESULT_*`` constants, with how they were measured). :func:`check_budget` raises
:class:`RegionTooLarge` (an :class:`~viper_rs.core.errors.InputError`) when the estimate is
over a :class:`Budget`, with the estimate and the ways out: a smaller box, a coarser
working pixel size (which one would fit) or a partial scan through the chip index.

Example::

    image = open_region(["tiles/"], bbox="-99.2,47.0,-99.1,47.1")
    cost = estimate_region(image, "spectral")
    check_budget(cost, Budget(memory_bytes=4 << 30, seconds=300))  # raises RegionTooLarge
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.cost import Budget
from viper_rs.core.detector import Detector
from viper_rs.core.errors import InputError
from viper_rs.core.units import bytes_text as _bytes
from viper_rs.core.units import count_text as _count
from viper_rs.core.units import duration_text as _duration
from viper_rs.region.chips import CHIP_M
from viper_rs.region.image import RegionImage

# ----------------------------------------------------------------------------- constants
# Measured with ``python -m eval.bench_region_cost`` (docs/benchmarks.md, "Region cost benchmark"
# gives the table): 17 runs of ``python -m viper_rs region ... --json`` on real imagery
# (North Dakota NAIP 5 m, Napa NAIP 1 m, SpaceNet aerial 1 m float64, OpenAerialMap drone
# tiles 0.149 m), at the imagery's own pixel size and resampled (``--gsd`` 2 to 0.149 m),
# spectral and ``auto`` (BuildingNet for buildings, spectral for the rest), each in a fresh
# process whose process tree's summed PSS was sampled every 50 ms; the statistics pass
# alone in another process (peak RSS above the process before it, CPU time); and whole
# North Dakota grids analysed as one chip (``--probes``: the bytes and CPU seconds of one
# chip in flight). Times are CPU seconds (the runs shared 2 cores with other work; on an
# idle machine the spectral detector's wall time is its CPU time, BuildingNet's torch
# threads make its wall time shorter): the estimate's "time" is CPU-bound work, not a
# promise. With the constants below, the 17 runs' estimated peak memory was 0.88-1.39x the
# measured one and the estimated time 0.69-1.60x the measured CPU time.


@dataclass(frozen=True)
class DetectorCost:
    """The measured cost of one detector part: memory of a process that loaded it
    (interpreter, libraries, weights, the sandbox's workers), seconds before its first
    chip, and per pixel of a chip's read window while it is analysed, bytes and seconds
    per million. ``model_gsd_m``: those pixels are counted at the model's scale (it
    resamples every chip to it), ``*_input_*``: the cost per pixel of the chip as read
    (resampling, normalising)."""

    name: str
    base_bytes: float
    startup_s: float
    bytes_per_px: float
    s_per_mpx: float
    model_gsd_m: float | None = None
    bytes_per_input_px: float = 0.0
    s_per_input_mpx: float = 0.0
    #: Seconds per chip besides the pixels (a model's fixed cost per chip, e.g. SAM).
    s_per_chip: float = 0.0
    #: How the constants were obtained.
    source: str = "measured"


#: The cost of each detector part, by name. ``spectral`` and ``buildingnet`` are measured
#: (above): spectral 120-145 B/px in flight on every probe (0.7-26 Mpx chips) plus the raw
#: bands, 1.0-1.5 CPU s per Mpx of read windows in the runs (1.3 fitted; halo growth
#: included); BuildingNet 160-165 B and 2.0 CPU s per Mpx at its 0.3 m scale plus about
#: 0.9 s per Mpx of the chip as read (0.149 m chips are downsampled 4x: 60 s for 40 Mpx
#: read), a process with torch and its weights loaded about 640 MB. ``graft``/``clip``/
#: ``sam`` are not measured here (no weights on the machine): from docs/benchmarks.md's
#: ``python -m eval.bench`` figures (ViT-B/16 image tower 307 ms per 224 px window at
#: stride 160 at its 1 m scale = 12 s per Mpx; cold start 27 s; SAM ViT-B image embedding
#: 19.6 s per chip), memory per pixel assumed. ``other`` (oracle, test detectors) is
#: charged as spectral.
DETECTOR_COSTS: dict[str, DetectorCost] = {
    "spectral": DetectorCost("spectral", base_bytes=110e6, startup_s=2.0, bytes_per_px=126.0,
                             s_per_mpx=1.3),
    "buildingnet": DetectorCost("buildingnet", base_bytes=640e6, startup_s=5.0,
                                bytes_per_px=165.0, s_per_mpx=2.0, model_gsd_m=0.3,
                                bytes_per_input_px=30.0, s_per_input_mpx=0.9),
    "graft": DetectorCost("graft", base_bytes=1.5e9, startup_s=30.0, bytes_per_px=100.0,
                          s_per_mpx=12.0, model_gsd_m=1.0, source="eval.bench figures"),
    "clip": DetectorCost("clip", base_bytes=1.2e9, startup_s=30.0, bytes_per_px=100.0,
                         s_per_mpx=12.0, model_gsd_m=1.0, source="eval.bench figures"),
    "sam": DetectorCost("sam", base_bytes=0.5e9, startup_s=10.0, bytes_per_px=0.0,
                        s_per_mpx=0.0, s_per_chip=19.6, source="eval.bench figures"),
    "other": DetectorCost("other", base_bytes=110e6, startup_s=2.0, bytes_per_px=126.0,
                          s_per_mpx=1.3, source="the spectral detector's"),
}

#: The spectral statistics pass (:func:`viper_rs.region.context.with_region_stats`) holds every
#: statistics chip's read window at once (its bands, validity and region-of-interest
#: masks: the raw bands + :data:`STATS_HELD_BYTES_PER_PX`), pools the values of up to
#: :data:`STATS_POOLED_PX` pixels (:data:`STATS_POOLED_BYTES_PER_PX` each) and works on one
#: chip's full-resolution maps at a time (:data:`STATS_CHIP_BYTES_PER_PX` per pixel of the
#: largest). Measured 113-1387 MB for 0.7-62 Mpx; this model is 0.9-1.35x of that.
STATS_HELD_BYTES_PER_PX = 2.0
STATS_POOLED_BYTES_PER_PX = 25.0
STATS_POOLED_PX = 10_000_000
STATS_CHIP_BYTES_PER_PX = 120.0
#: CPU seconds per million pixels of the statistics pass (0.58-1.05 measured).
STATS_S_PER_MPX = 0.8
#: Kept per chip-core pixel until the chips are stitched (packed foreground, scores and
#: instance ids of its foreground pixels, the stitcher's cropped masks), per concept.
RESULT_BYTES_PER_PX = 3.0
#: Seconds per chip besides its pixels (opening sources, reprojecting, stitching).
CHIP_S = 0.01
#: Every chip position near a source's footprint is laid out and reported, also those
#: outside the area (skipped): seconds and bytes per position (layout measured at 100 us
#: and 880 B per position; the report's row with its WGS84 footprint about as much again).
#: Positions over no source (between sources far apart) are not laid out.
POSITION_S = 3e-4
POSITION_BYTES = 2000.0
#: The ground area of each grid row is computed once (bytes and seconds per row).
ROW_BYTES = 64.0
ROW_S = 1e-5
#: Share of a worker's speed that is left when ``workers`` processes share the cores
#: (``eval.bench_region``: 2 processes are 1.7x one on 2 cores).
WORKER_EFFICIENCY = 0.85
#: Python's allocator slack and the planner's and sandbox's transient memory (bytes).
OVERHEAD_BYTES = 20e6
#: A chip's read window grows (its halo doubled, at most twice) while objects decided as a
#: whole are cut by it (:data:`viper_rs.region.scan.MAX_HALO_GROWTH`): the largest window
#: one worker may hold is that of a twice-grown chip, capped by the grid (at 0.3 m on
#: 1 km2 of North Dakota a chip grew to the whole 11 Mpx grid).
HALO_GROWTH = 4
#: The share of the budget a suggested coarser ``--gsd`` must fit in (its grid is laid
#: out afresh, a pixel or two from the one the suggestion was estimated on).
FIT_HEADROOM = 0.95
#: Above this many chips the live chips are estimated from each area part's bounding box
#: and covered share instead of being tested one by one.
EXACT_CHIPS = 50_000


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class RegionCost:
    """The estimate of one region question (nothing read yet).

    ``pixels``: working-grid pixels of the requested area's chips (cores);
    ``read_pixels``: pixels the chips read with their halos; ``stats_pixels``: pixels the
    spectral statistics pass reads (0 without it); ``chips``: chips to analyse;
    ``memory_bytes``: peak resident memory of every process of the run; ``seconds``: wall
    time (an estimate from measured constants: the machine's load, the imagery and what
    the program asks move it); ``pixel_m``: the working pixel size in metres;
    ``sources``: the sources taking part, ``sources_outside`` those outside the box.
    """

    pixels: int
    read_pixels: int
    stats_pixels: int
    chips: int
    memory_bytes: int
    seconds: float
    pixel_m: float
    crs: str
    width: int
    height: int
    area_m2: float
    detector: str
    parts: list[str]
    workers: int
    sources: int
    sources_outside: int = 0
    sources_skipped: int = 0
    chip_m: float = 256.0
    halo_m: float = 0.0
    #: Pixels of the largest read window one worker may hold (a chip whose halo grew).
    largest_chip_pixels: int = 0
    #: Chip positions laid out near the sources' footprints (the scan's and the statistics
    #: pass's), those outside the area included.
    chip_positions: int = 0
    #: The pieces the memory adds up from (bytes) and the seconds, for the log and --json.
    memory_parts: dict[str, int] = field(default_factory=dict)
    seconds_parts: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One sentence: ``"About 44.5 Mpx at 0.149 m (16 chips of 256 m, 1 source), peak
        memory about 3.9 GB, time about 12 min (estimate)"``."""
        src = f"{self.sources} source{'s' if self.sources != 1 else ''}"
        if self.sources_outside:
            src += f"; {self.sources_outside} outside the area left out"
        if self.chip_positions > 10 * max(self.chips, 1000):
            src += (f"; spread over {self.chip_positions:,} chip positions: the sources are "
                    "far apart")
        return (f"about {_count(self.read_pixels)}px read at {self.pixel_m:.3g} m/px "
                f"({self.width:,} x {self.height:,} px grid, {_area(self.area_m2)}, "
                f"{self.chips:,} chip{'s' if self.chips != 1 else ''} of {self.chip_m:g} m, "
                f"{src}), peak memory about {_bytes(self.memory_bytes)}, time about "
                f"{_duration(self.seconds)} with {self.detector} on {self.workers} "
                f"worker{'s' if self.workers != 1 else ''} (an estimate)")

    def to_dict(self) -> dict[str, Any]:
        """Plain form for JSON."""
        out = asdict(self)
        out["seconds"] = round(self.seconds, 1)
        return out


class RegionTooLarge(InputError):
    """A region question whose estimate is over its budget, refused before any chip is
    read. ``cost`` is the estimate, ``budget`` the budget, ``fit_pixel_m`` the finest
    working pixel size (m) at which the same area would fit (None when none does)."""

    type = "budget"

    def __init__(self, message: str, cost: RegionCost, budget: Budget,
                 fit_pixel_m: float | None) -> None:
        super().__init__(message)
        self.cost = cost
        self.budget = budget
        self.fit_pixel_m = fit_pixel_m

    @property
    def over(self) -> list[str]:
        """What is over the budget: ``["memory 3.9 GB > 1.0 GB", "time 12 min > 5 min"]``."""
        out = []
        if self.cost.memory_bytes > self.budget.memory_bytes:
            out.append(f"memory {_bytes(self.cost.memory_bytes)} > "
                       f"{_bytes(self.budget.memory_bytes)}")
        if self.cost.seconds > self.budget.seconds:
            out.append(f"time {_duration(self.cost.seconds)} > {_duration(self.budget.seconds)}")
        return out

    @property
    def fit_text(self) -> str | None:
        """The fitting working pixel size rounded up for people (``"0.63"``), or None."""
        return None if self.fit_pixel_m is None else _round_up(self.fit_pixel_m)


# ----------------------------------------------------------------------------- estimate
def estimate_region(
    image: RegionImage,
    detector: str | Detector,
    chip_m: float = CHIP_M,
    halo_m: float | str | None = None,
    workers: int = 1,
    concepts: Sequence[str] | None = None,
    ray_address: str | None = None,
    chips: Sequence[Any] | None = None,
    settings: Settings | None = None,
) -> RegionCost:
    """The estimated cost of asking about ``image`` with ``detector`` (a name or a built
    detector) on chips of ``chip_m`` metres with ``halo_m`` of context (None/``auto``: the
    detector's default), on ``workers`` processes (or Ray actors at ``ray_address``).

    ``concepts`` (the program's literal concepts) route each to the detector part that
    answers it (buildings to the learned model where it covers the pixel size); None
    counts every part. ``chips`` (a layout after the index funnel) counts only those not
    skipped; by default every chip meeting the area. Nothing is read."""
    from viper_rs.region.context import STATS_CHIP_PX, chip_halo_m

    settings = settings or Settings()
    from viper_rs.vision.factory import build_detector

    det = build_detector(detector, settings) if isinstance(detector, str) else detector
    grid = image.grid
    px = grid.pixel_size
    from viper_rs.core.ground_area import linear_unit_factor

    unit = linear_unit_factor(grid.crs)
    pixel_m = px * unit
    halo = chip_halo_m(halo_m, det, image)
    size = int(round(chip_m / pixel_m)) if math.isfinite(chip_m) else 0
    if size < 16:
        from viper_rs.region.chips import MIN_CHIP_PX

        raise InputError(f"--chip-m {chip_m:g} is {size} px at {pixel_m:g} m/px; chips need "
                         f"at least {MIN_CHIP_PX} px")
    halo_px = int(math.ceil(halo / pixel_m)) if halo > 0 else 0
    from viper_rs.region.chips import count_positions

    positions = count_positions(grid, size, halo_px)
    if chips is not None:
        live = [c for c in chips if c.status != "skipped"]
        n_chips = len(live)
        core_px = sum((c.core[2] - c.core[0]) * (c.core[3] - c.core[1]) for c in live)
        read_px = sum((c.read[2] - c.read[0]) * (c.read[3] - c.read[1]) for c in live)
    else:
        n_chips, core_px, read_px = chip_pixels(grid, size, halo_px)
    stats_halo = det.stats_halo(px)
    stats_px = stats_chip = 0
    if stats_halo is not None:
        ctx = int(math.ceil(stats_halo / px))
        _, _, stats_px = chip_pixels(grid, STATS_CHIP_PX, ctx)
        stats_chip = _largest_read(grid, STATS_CHIP_PX, ctx)
        positions += count_positions(grid, STATS_CHIP_PX, ctx)

    parts = detector_parts(det, pixel_m, concepts)
    from viper_rs.core.detector import ContextSensitive

    grows = isinstance(det, ContextSensitive) and any(c.name != "buildingnet" for c in parts)
    biggest = _largest_read(grid, size, halo_px * (HALO_GROWTH if grows else 1))
    workers = max(1, int(workers))
    raw = len(image.band_names) * _itemsize(image)
    # Memory: the statistics pass holds its chips; then the scan holds the results and,
    # per worker, one (possibly grown) chip in flight.
    stats_mem = (stats_px * (raw + STATS_HELD_BYTES_PER_PX)
                 + min(stats_px, STATS_POOLED_PX) * STATS_POOLED_BYTES_PER_PX
                 + stats_chip * STATS_CHIP_BYTES_PER_PX) if stats_px else 0.0
    results_mem = core_px * RESULT_BYTES_PER_PX * max(1, len(concepts or ()))
    flight = biggest * raw + max(
        (biggest * (_scale(c, pixel_m) * c.bytes_per_px + c.bytes_per_input_px) for c in parts),
        default=0.0)
    loaded = loaded_parts(det)
    base = max(c.base_bytes for c in loaded) + sum(c.base_bytes for c in loaded if c.name == "sam")
    remote = ray_address not in (None, "local")
    pool = workers > 1 or ray_address is not None
    worker_mem = (0.0 if remote else workers * (base + flight)) if pool else 0.0
    scan_mem = results_mem + (worker_mem if pool else flight)
    layout_mem = positions * POSITION_BYTES + grid.height * ROW_BYTES
    memory = base + OVERHEAD_BYTES + layout_mem + max(stats_mem, scan_mem)
    # Time: the statistics pass in this process, then the chips on the workers.
    cores = os.cpu_count() or 1
    speed = 1.0 if not pool else (workers if remote else min(workers, cores)) * WORKER_EFFICIENCY
    speed = max(speed, 1.0)
    scan_s = sum(read_px / 1e6 * (_scale(c, pixel_m) * c.s_per_mpx + c.s_per_input_mpx)
                 + n_chips * c.s_per_chip for c in parts) + n_chips * CHIP_S
    times = {"startup": max(c.startup_s for c in loaded),
             "layout": positions * POSITION_S + grid.height * ROW_S,
             "statistics": stats_px / 1e6 * STATS_S_PER_MPX, "scan": scan_s / speed}
    seconds = sum(times.values())
    return RegionCost(
        pixels=int(core_px), read_pixels=int(read_px), stats_pixels=int(stats_px),
        chips=int(n_chips), memory_bytes=int(memory), seconds=float(seconds),
        pixel_m=float(pixel_m), crs=str(grid.crs), width=int(grid.width),
        height=int(grid.height), area_m2=float(grid.area.area) * unit * unit,
        detector=det.name, parts=[c.name for c in parts],
        workers=workers, sources=len(image.sources), sources_outside=int(grid.outside),
        sources_skipped=len(grid.skipped), chip_m=float(chip_m), halo_m=float(halo),
        largest_chip_pixels=int(biggest), chip_positions=int(positions),
        memory_parts={"base": int(base + OVERHEAD_BYTES), "layout": int(layout_mem),
                      "statistics": int(stats_mem),
                      "results": int(results_mem), "chip_in_flight": int(flight),
                      "workers": int(worker_mem)},
        seconds_parts={k: round(v, 2) for k, v in times.items()},
    )


def detector_parts(det: Detector, pixel_m: float, concepts: Sequence[str] | None = None
                   ) -> list[DetectorCost]:
    """The cost entries of the detector parts that will analyse chips of ``pixel_m``
    metres for ``concepts`` (None: every part; see
    :meth:`~viper_rs.core.detector.Detector.cost_parts`)."""
    return [_part_cost(n) for n in det.cost_parts(pixel_m, concepts)]


def loaded_parts(det: Detector) -> list[DetectorCost]:
    """The cost entries of every part ``det`` loads (whether or not it answers): a routing
    detector holds its learned building model even where the primary answers."""
    return [_part_cost(n) for n in det.loaded_parts()]


def _part_cost(name: str) -> DetectorCost:
    """The cost entry of the part ``name`` (``other`` for a part not measured)."""
    return DETECTOR_COSTS.get(name.lower(), DETECTOR_COSTS["other"])


def chip_pixels(grid: Any, size: int, halo: int) -> tuple[int, int, int]:
    """(chips, core pixels, read pixels) of the chips of ``size`` px with ``halo`` px that
    meet ``grid.area``, laid out as :func:`viper_rs.region.chips.layout` does. Up to
    :data:`EXACT_CHIPS` chips each is tested; above, each part of the area counts the
    chips of its bounding box in proportion to the share of it the part covers."""
    h, w = grid.height, grid.width
    if math.ceil(h / size) * math.ceil(w / size) <= EXACT_CHIPS:
        return _exact(grid, grid.area, size, halo, 0, (h - 1) // size, 0, (w - 1) // size)
    import shapely

    inv = ~grid.transform
    n = core = read = 0
    for part in shapely.get_parts(grid.area):
        if part.is_empty or not part.area > 0:
            continue
        x0, y0, x1, y1 = part.bounds
        (ca, ra), (cb, rb) = inv * (x0, y0), inv * (x1, y1)
        i0 = max(int(math.floor(min(ra, rb))) // size, 0)
        i1 = min(int(math.ceil(max(ra, rb)) - 1) // size, (h - 1) // size)
        j0 = max(int(math.floor(min(ca, cb))) // size, 0)
        j1 = min(int(math.ceil(max(ca, cb)) - 1) // size, (w - 1) // size)
        if i1 < i0 or j1 < j0:
            continue
        if (i1 - i0 + 1) * (j1 - j0 + 1) <= EXACT_CHIPS:
            a, b, c = _exact(grid, part, size, halo, i0, i1, j0, j1)
        else:
            share = min(1.0, part.area / max((x1 - x0) * (y1 - y0), 1e-300))
            rows, cols = _axis(i0, i1, size, halo, h), _axis(j0, j1, size, halo, w)
            a = max(1, math.ceil(share * rows[0].size * cols[0].size))
            b = int(share * rows[0].sum() * cols[0].sum())
            c = int(share * rows[1].sum() * cols[1].sum())
        n, core, read = n + a, core + b, read + c
    return n, core, read


def _axis(i0: int, i1: int, size: int, halo: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Core and read lengths along one axis of chips ``i0..i1`` (inside ``n`` pixels)."""
    idx = np.arange(i0, i1 + 1, dtype=np.int64)
    r0, r1 = idx * size, np.minimum(idx * size + size, n)
    return r1 - r0, np.minimum(r1 + halo, n) - np.maximum(r0 - halo, 0)


def _exact(grid: Any, area: Any, size: int, halo: int, i0: int, i1: int, j0: int,
           j1: int) -> tuple[int, int, int]:
    """(chips, core pixels, read pixels) of chips ``i0..i1`` x ``j0..j1`` whose core meets
    ``area`` by a positive area (each tested)."""
    import shapely

    idx_r, idx_c = np.arange(i0, i1 + 1), np.arange(j0, j1 + 1)
    r0, r1 = idx_r * size, np.minimum(idx_r * size + size, grid.height)
    c0, c1 = idx_c * size, np.minimum(idx_c * size + size, grid.width)
    t = grid.transform
    R0, C0 = np.meshgrid(r0, c0, indexing="ij")
    R1, C1 = np.meshgrid(r1, c1, indexing="ij")
    xa, xb = t.c + t.a * C0, t.c + t.a * C1
    ya, yb = t.f + t.e * R0, t.f + t.e * R1
    boxes = shapely.box(np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb),
                        np.maximum(ya, yb))
    shapely.prepare(area)
    hit = shapely.intersects(area, boxes)
    if hit.any():
        hit[hit] = shapely.area(shapely.intersection(area, boxes[hit])) > 0
    rows, cols = _axis(i0, i1, size, halo, grid.height), _axis(j0, j1, size, halo, grid.width)
    return (int(hit.sum()), int(np.outer(rows[0], cols[0])[hit].sum()),
            int(np.outer(rows[1], cols[1])[hit].sum()))


def _largest_read(grid: Any, size: int, halo: int) -> int:
    """Pixels of the largest read window of a chip (inside the grid)."""
    return min(size + 2 * halo, grid.height) * min(size + 2 * halo, grid.width)


def _scale(cost: DetectorCost, pixel_m: float) -> float:
    """Pixels a part analyses per working-grid pixel (its own scale's)."""
    if cost.model_gsd_m is None:
        return 1.0
    return (pixel_m / cost.model_gsd_m) ** 2


def _itemsize(image: RegionImage) -> int:
    """Bytes per band value of the region's first sources (a chip takes its first source's
    type)."""
    return _itemsize_of(tuple(s.uri for s in image.sources[:4]))


@lru_cache(maxsize=64)
def _itemsize_of(uris: tuple[str, ...]) -> int:
    from viper_rs.core.rasterfile import open_raster

    size = 1
    for uri in uris:
        try:  # sources accepted by the scan: a URL there was typed by the user
            with open_raster(uri, remote=True) as ds:
                size = max(size, max(np.dtype(d).itemsize for d in ds.dtypes))
        except Exception:  # noqa: BLE001 - unreadable now: the scan reports it
            continue
    return size


# ----------------------------------------------------------------------------- budget
def check_budget(cost: RegionCost, budget: Budget, image: RegionImage | None = None,
                 detector: str | Detector | None = None, **estimate_kw: Any) -> None:
    """Raise :class:`RegionTooLarge` when ``cost`` is over ``budget``: the message gives
    the estimate and the ways out (a smaller box, a coarser ``--gsd`` - the finest that
    fits, found by re-estimating ``image`` with ``detector`` when they are given - or a
    partial scan with ``--index PATH --top K``)."""
    if cost.memory_bytes <= budget.memory_bytes and cost.seconds <= budget.seconds:
        return
    fit = None
    if image is not None and detector is not None:
        fit = fitting_pixel_m(image, detector, budget, cost, **estimate_kw)
    over = RegionTooLarge("", cost, budget, fit).over
    ways = ["a smaller box (--bbox)"]
    if fit is not None:
        ways.append(f"a coarser working resolution (--gsd {_round_up(fit)} fits; now "
                    f"{cost.pixel_m:.3g} m)")
    else:
        ways.append("a coarser working resolution (--gsd M metres per pixel)")
    before_scan = sum(cost.memory_parts.get(k, 0) for k in ("base", "layout", "statistics"))
    if (before_scan <= budget.memory_bytes
            and cost.seconds - cost.seconds_parts.get("scan", 0.0) <= budget.seconds):
        ways.append("a partial scan of the chips the index ranks best (--index PATH --top K)")
    ways.append("a larger budget (--max-memory-mb, --max-time-s; VIPER_RS_REGION_MAX_MEMORY_MB, "
                "VIPER_RS_REGION_MAX_TIME_S)")
    raise RegionTooLarge(
        f"this region question is over its budget ({'; '.join(over)}): {cost.describe()}. "
        f"Ways out: {'; '.join(ways)}", cost, budget, fit)


def fitting_pixel_m(image: RegionImage, detector: str | Detector, budget: Budget, cost: RegionCost,
                    **estimate_kw: Any) -> float | None:
    """The finest working pixel size (m) at which ``image``'s area fits ``budget`` (coarser
    grids over the same area, each estimated), or None when none up to 1 km does."""

    def fits(pixel_m: float) -> bool:
        try:
            c = estimate_region(coarser(image, pixel_m), detector, **estimate_kw)
        except InputError:  # chips under 16 px: as coarse as the chip size allows
            return False
        return (c.memory_bytes <= FIT_HEADROOM * budget.memory_bytes
                and c.seconds <= FIT_HEADROOM * budget.seconds)

    lo = cost.pixel_m
    hi = lo * 2
    while not fits(hi):
        lo, hi = hi, hi * 2
        if hi > 1000.0:
            return None
    for _ in range(12):  # bisect in log space to ~2%
        if hi / lo < 1.02:
            break
        mid = math.sqrt(lo * hi)
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def coarser(image: RegionImage, pixel_m: float) -> RegionImage:
    """``image`` on a grid of ``pixel_m`` metres over the same area, CRS and sources (what
    ``open_region(..., pixel_m=pixel_m)`` would give, up to the grid's origin)."""
    from dataclasses import replace

    from affine import Affine

    from viper_rs.core.ground_area import linear_unit_factor

    g = image.grid
    size = pixel_m / linear_unit_factor(g.crs)
    minx, miny, maxx, maxy = g.area.bounds
    t = g.transform
    x0, y0 = t.c, t.f
    k0 = math.floor((minx - x0) / size + 1e-6)
    k1 = math.ceil((maxx - x0) / size - 1e-6)
    j0 = math.floor((y0 - maxy) / size + 1e-6)
    j1 = math.ceil((y0 - miny) / size - 1e-6)
    grid = replace(g, transform=Affine(size, 0.0, x0 + k0 * size, 0.0, -size, y0 - j0 * size),
                   width=max(k1 - k0, 1), height=max(j1 - j0, 1))
    return RegionImage(grid=grid, sources=image.sources, band_names=list(image.band_names),
                       path=image.path)


# ----------------------------------------------------------------------------- words
def _round_up(m: float) -> str:
    """A pixel size rounded up to 2 significant digits (``0.63``, ``12``)."""
    digits = max(0, 1 - int(math.floor(math.log10(m))))
    step = 10 ** -digits
    return f"{math.ceil(m / step - 1e-9) * step:.{digits}f}"


def _area(m2: float) -> str:
    """``"1.0 km2"``, ``"5,800 m2"``."""
    return f"{m2 / 1e6:,.3g} km2" if m2 >= 1e5 else f"{m2:,.0f} m2"
