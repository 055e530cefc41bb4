"""ask_region: one question about a region of many sources, with the chips' report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viper_rs.core.answer import Answer
from viper_rs.core.config import Settings
from viper_rs.core.cost import Budget
from viper_rs.core.detector import Detector
from viper_rs.core.errors import InputError, ViperError, first_line
from viper_rs.core.georef import gsd_problem
from viper_rs.planning.base import Plan, Planner
from viper_rs.region.chips import CHIP_M, OUTSIDE, layout
from viper_rs.region.context import chip_halo_m, with_region_stats
from viper_rs.region.cost import RegionCost, RegionTooLarge
from viper_rs.region.detector import ChipReader, RegionDetector
from viper_rs.region.grid import build_grid, parse_bbox
from viper_rs.region.image import RegionImage
from viper_rs.tiling.chips import Chip
from viper_rs.tiling.sources import Source, scan

if TYPE_CHECKING:
    from rasterio.crs import CRS

    from viper_rs.agent.loop import Agent
    from viper_rs.index.query import Searcher
    from viper_rs.index.store import ChipIndex
    from viper_rs.region.funnel import Funnel

log = logging.getLogger(__name__)

#: A scan still running after this many times the budget's time stops (the chips not
#: reached are reported as missing coverage).
SCAN_TIME_SLACK = 2.0
#: Most chip positions laid out to apply an index's funnel before the budget is checked
#: (a larger grid is checked on its whole estimate).
MAX_FUNNEL_CHIPS = 200_000


@dataclass
class ChipReport:
    """Per-chip outcome of a region question and the coverage it adds up to."""

    chips: list[dict[str, Any]] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)
    #: The run's cost estimate (``RegionCost.to_dict``), made before any chip was read.
    estimate: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):  # noqa: ANN204 - iterate the chips
        return iter(self.chips)

    def __len__(self) -> int:
        return len(self.chips)


def open_region(
    sources: Sequence[str | Path | Source],
    bbox: str | Sequence[float] | None = None,
    pixel_m: float | None = None,
    crs: Any = None,
) -> RegionImage:
    """The RegionImage of ``sources`` (files, folders, .txt lists, URLs or Sources) over
    ``bbox`` (WGS84 W,S,E,N). Only the sources that meet the bbox take part: they alone set
    the working grid's CRS and pixel size (the finest of theirs, or ``pixel_m`` metres);
    sources that cannot be placed are left out (``image.grid.skipped``, with the reason).
    InputError when no source is readable or the bbox touches none."""
    given = [s for s in sources if isinstance(s, Source)]
    names = [s for s in sources if not isinstance(s, Source)]
    found = scan(names, extra=given)
    if not found.sources:
        why = "; ".join(r if r.startswith(u) else f"{u}: {r}" for u, r in found.skipped[:3])
        raise InputError("no readable source raster" + (f" ({why})" if why else ""))
    problem = gsd_problem("the region", pixel_m)
    if problem is not None:
        raise InputError(problem)
    try:
        grid = build_grid(found.sources, parse_bbox(bbox), pixel_m=pixel_m, crs=crs)
    except ViperError:
        raise
    except Exception as exc:  # noqa: BLE001 - PROJ/GEOS errors on the sources' geometry
        raise InputError(f"the sources cannot be laid on one working grid ({first_line(exc)})"
                         ) from None
    # unreadable or refused files (a FIFO, a VRT, a broken georeference) are listed too
    grid.skipped[:0] = found.skipped
    used = [found.sources[k] for k in grid.used]
    for uri, why in grid.skipped:
        log.warning("region: leaving out %s", why if why.startswith(uri) else f"{uri}: {why}")
    nb = min(s.count for s in used)
    return RegionImage(grid=grid, sources=used, band_names=_band_names(used[0], nb))


def _band_names(src: Source, nb: int) -> list[str]:
    """Band roles of a source as GeoImage reads them (first ``nb`` bands)."""
    from viper_rs.core.bands import band_roles
    from viper_rs.core.rasterfile import open_raster

    try:  # a source accepted by the scan: a URL there was typed by the user
        with open_raster(src.uri, remote=True) as ds:
            names = band_roles([c.name for c in ds.colorinterp], list(ds.descriptions or []),
                                {**ds.tags(), **{f"band{i}": ds.tags(i) for i in range(1, ds.count + 1)}})
    except Exception:  # noqa: BLE001 - fall back to the usual order
        names = ["R", "G", "B", "NIR"]
    names = ["NIR" if n == "ALPHA" else n for n in names]
    return (names + [f"BAND{i + 1}" for i in range(len(names), nb)])[:nb]


def coverage(image: RegionImage, chips: list[Chip]) -> dict[str, Any]:
    """Area scanned (m2), its share of the requested area, and whether chips are missing."""
    requested = float(image.grid.area.area) * float(image.row_pixel_area.mean()) \
        / (image.grid.pixel_size ** 2)
    scanned = sum(c.valid_m2 for c in chips if c.status == "ok")
    failed = [c.id for c in chips if c.status == "failed"]
    return {
        "requested_m2": round(requested, 3),
        "scanned_m2": round(scanned, 3),
        "share": round(min(scanned / requested, 1.0), 6) if requested > 0 else 0.0,
        "partial": bool(failed),
        "failed_chips": failed,
        # Whether the program had chips read (a program asking no detection reads none).
        "read": any(c.status != "pending" for c in chips if c.error != OUTSIDE),
    }


def nothing_scanned(report: ChipReport) -> str | None:
    """Why the answer is about none of the region, when chips were to be read and not one
    valid pixel was scanned (every chip failed, or holds no valid pixel); else None."""
    cov = report.coverage
    if not cov.get("read") or cov.get("scanned_m2", 0.0) > 0:
        return None
    failed = [c for c in report.chips if c.get("status") == "failed"]
    if failed:
        why = failed[0].get("reason") or "unknown"
        return (f"nothing of the region was scanned: {len(failed)} of {len(report.chips)} "
                f"chips failed (first, {failed[0]['id']}: {why}), so there is no answer; "
                "lower the load (--gsd, --chip-m, --workers) or fix the sources and ask again")
    return ("nothing of the region was scanned: its sources hold no valid pixel (nodata or "
            "NaN everywhere), so there is no answer")


def chip_rows(image: RegionImage, chips: list[Chip]) -> list[dict[str, Any]]:
    """Plain per-chip records: id, sources, WGS84 footprint, status, ms."""
    out = []
    for c in chips:
        status = c.status if c.status != "pending" else "skipped"
        row = {
            "id": c.id, "sources": [s.name for s in c.sources],
            "footprint_wgs84": image.grid.lonlat_bounds(*c.core), "status": status,
            "ms": round(c.ms, 3),
        }
        if c.extra.get("resumed"):
            row["resumed"] = True
        if c.error or c.status == "pending":
            row["reason"] = c.error or "not read (the program asked for no detection)"
        out.append(row)
    return out


def run_recipe(image: RegionImage, question: str, detector: str, chip_m: float,
               halo_m: float) -> dict[str, Any]:
    """What a resumed run must share with the stored one: question, detector, grid, chips."""
    g = image.grid
    return {
        "question": question, "detector": detector, "chip_m": float(chip_m),
        "halo_m": float(halo_m), "crs": str(g.crs),
        "transform": [float(v) for v in tuple(g.transform)[:6]], "shape": list(g.shape),
        "sources": sorted(s.uri for s in image.sources),
    }


def _runner(det: str | Detector, settings: Settings, image: RegionImage, workers: int,
            ray_address: str | None, reader: ChipReader | None) -> tuple[Any, bool]:
    """The chip backend (None: in-process) and whether this call started Ray."""
    if ray_address:
        from viper_rs.index.build import connect_ray
        from viper_rs.region.scan import RayRunner

        started = connect_ray(ray_address, num_cpus=workers if workers > 1 else None)
        try:
            return RayRunner(det, settings, image, workers if workers > 1 else None, reader,
                             address=ray_address), started
        except BaseException:
            _stop(None, started)
            raise
    if workers > 1:
        from viper_rs.region.scan import ProcessRunner

        return ProcessRunner(det, settings, image, workers, reader), False
    return None, False


def _stop(runner: Any, started: bool) -> None:
    """Stop the chip workers, and Ray when this run started it."""
    if runner is not None:
        runner.close()
    if started:
        import ray

        ray.shutdown()


@dataclass(frozen=True)
class RegionOptions:
    """How a region question is read and answered (:func:`ask_region`,
    :func:`estimate_question`); every field has a default.

    Where: ``bbox`` (WGS84 W,S,E,N, or a ``"W,S,E,N"`` string), ``pixel_m`` (the working
    grid's pixel size in metres; default the finest of the sources meeting the bbox) and
    ``crs`` (the working CRS); all three are ignored when the sources are a ready
    :class:`RegionImage`. How: chips of ``chip_m`` metres read with ``halo_m`` of context
    (``None`` or ``"auto"``: the detector's default), answered by ``detector`` (a name or a
    built detector; default the settings', also when an agent is given), planned by ``planner`` (a name or a built
    planner; default the agent's, else the settings'), or ``program`` run instead of a
    plan. ``settings`` default to :meth:`Settings.from_env`, ``budget`` to the settings'
    ``region_max_memory_mb`` and ``region_max_time_s``.

    Only for :func:`ask_region`: ``index`` (a chip index path, ChipIndex or Searcher) and
    ``top`` (the funnel, :mod:`viper_rs.region.funnel`), ``workers`` local processes or
    ``ray_address`` (``local``, ``auto`` or ``HOST:PORT``), ``resume`` (a folder keeping
    finished chips), ``progress`` (a chip progress bar on stderr), ``reader`` (reads one
    chip's pixels; default :func:`~viper_rs.region.chips.read_chip`). ``workers`` and
    ``ray_address`` also size the estimate."""

    bbox: str | Sequence[float] | None = None
    pixel_m: float | None = None
    crs: CRS | str | None = None
    chip_m: float = CHIP_M
    halo_m: float | str | None = None
    detector: str | Detector | None = None
    planner: str | Planner | None = None
    program: str | None = None
    settings: Settings | None = None
    budget: Budget | None = None
    index: str | Path | ChipIndex | Searcher | None = None
    top: int = 10
    workers: int = 1
    ray_address: str | None = None
    resume: str | Path | None = None
    progress: bool = False
    reader: ChipReader | None = None


@dataclass
class _Prepared:
    """What :func:`ask_region` and :func:`estimate_question` both start from: the settings,
    budget, region, detector and planner, the plan made once before any chip is read
    (None when ``program`` was given or planning failed) and the program whose concepts
    size the estimate."""

    settings: Settings
    budget: Budget
    image: RegionImage
    #: The detector as asked for (a name workers build their own from, or an object).
    detector_spec: str | Detector
    detector: Detector
    #: The chip halo in metres (``options.halo_m`` checked, or the detector's default).
    halo_m: float
    planner: Planner
    plan: Plan | None
    program: str | None

    def estimate_args(self, options: RegionOptions) -> dict[str, Any]:
        """The keyword arguments of :func:`~viper_rs.region.cost.estimate_region` and
        :func:`~viper_rs.region.cost.check_budget` besides the image and detector."""
        from viper_rs.agent.loop import program_queries

        return {"chip_m": options.chip_m, "halo_m": options.halo_m, "workers": options.workers,
                "concepts": program_queries(self.program) if self.program else None,
                "ray_address": options.ray_address, "settings": self.settings}


def _prepare(sources: Sequence[str | Path | Source] | RegionImage, question: str,
             options: RegionOptions, agent: Agent | None) -> _Prepared:
    """Settings, budget, the opened region, the built detector and planner, and the
    question planned once (its concepts size the estimate and steer the funnel; a planning
    failure leaves no plan: the agent plans again and reports it)."""
    from viper_rs.planning import build_planner
    from viper_rs.vision.factory import build_detector

    settings = options.settings or Settings.from_env()
    budget = options.budget or Budget.for_region(settings)
    image = sources if isinstance(sources, RegionImage) else open_region(
        sources, options.bbox, options.pixel_m, options.crs)
    spec = options.detector if options.detector is not None else settings.detector
    detector = build_detector(spec, settings) if isinstance(spec, str) else spec
    halo = chip_halo_m(options.halo_m, detector, image)
    pl: str | Planner = (options.planner if options.planner is not None
                         else agent.planner if agent is not None else settings.planner)
    planner = build_planner(pl, settings) if isinstance(pl, str) else pl
    plan, text = None, options.program
    if text is None and question.strip():
        try:
            plan = planner.plan(question)
        except ViperError:
            plan = None
        else:
            text = plan.program if plan.error is None else None
    return _Prepared(settings, budget, image, spec, detector, halo, planner, plan, text)


def ask_region(
    sources: Sequence[str | Path | Source] | RegionImage,
    question: str,
    options: RegionOptions | None = None,
    agent: Agent | None = None,
) -> tuple[Answer, ChipReport]:
    """Answer ``question`` about the region of ``sources`` (in ``options.bbox``), as one
    image: the program runs once; ``find`` is answered chip by chip and stitched. Returns
    the Answer (notes name missing coverage) and the ChipReport (per chip, coverage, and
    the ``estimate`` of the run's cost). ``agent`` (default: one built for this call and
    closed after it) runs the program in its sandbox, with the region's chip-by-chip
    detector and the plan made beforehand handed to it for this question (the agent is not
    changed).

    Before any chip is read, the run's pixels, chips, peak memory and time are estimated
    (:mod:`viper_rs.region.cost`, for the concepts the planned program names) and checked
    against the budget: over it, :class:`~viper_rs.region.cost.RegionTooLarge` (an
    InputError) is raised with the estimate and the ways out. A scan still running after
    twice the budget's time stops; the chips not reached are reported as missing coverage.

    With ``options.program`` that program runs instead of a plan. With ``options.index``
    only the chips meeting the index's best ``top`` chips for the program's concepts, and
    their neighbours, are analysed (a partial scan, see :mod:`viper_rs.region.funnel`).

    Chips run in this process, on ``workers`` local processes (``workers > 1``) or on Ray
    actors (``ray_address``), one detector per worker (built from the detector name, or
    the pickled detector object). With ``resume`` a run stopped part-way goes on from the
    stored chips (a folder of another question, detector or grid is refused).

    The halo (``halo_m`` ``None`` or ``"auto"``: the detector's default) is the context
    read around each chip: for the spectral detector the reach of its windowed rules, else
    :data:`HALO_M`. The spectral detector measures every chip with the statistics of the
    whole region (:mod:`viper_rs.region.context`), so its image-wide statistics do not
    depend on how the region is tiled or chipped."""
    import time

    from viper_rs.agent.loop import Agent
    from viper_rs.region.cost import check_budget, estimate_region
    from viper_rs.region.funnel import PlannedOnce

    t_start = time.monotonic()
    options = options or RegionOptions()
    prep = _prepare(sources, question, options, agent)
    settings, budget, image, inner = prep.settings, prep.budget, prep.image, prep.detector
    det = prep.detector_spec
    halo = prep.halo_m
    own = agent is None
    agent = agent or Agent(settings=settings, detector=inner, planner=prep.planner)
    planner = prep.planner if prep.plan is None else PlannedOnce(prep.plan, prep.planner)
    runner, started = None, False
    try:
        est = prep.estimate_args(options)
        cost = estimate_region(image, inner, **est)
        funnelled = options.index is not None and cost.chip_positions <= MAX_FUNNEL_CHIPS
        if not funnelled:
            check_budget(cost, budget, image, inner, **est)
        chips = layout(image, options.chip_m, halo)
        funnel, funnel_notes = _funnel(image, chips, prep.program, options.index, options.top,
                                       settings)
        if funnelled:  # the partial scan's own estimate (the statistics pass stays whole)
            cost = estimate_region(image, inner, chips=chips, **est)
            check_budget(cost, budget, image, inner, **est)
        log.info("region: %s", cost.describe())
        region_inner = with_region_stats(inner, image, options.reader)
        if region_inner is not inner:  # workers get the detector with the region's statistics
            inner = det = region_inner
        runner, started = _runner(det, settings, image, options.workers, options.ray_address,
                                  options.reader)
        store = None
        if options.resume is not None:
            from viper_rs.region.resume import ResumeStore

            store = ResumeStore(options.resume, run_recipe(image, question, inner.name,
                                                           options.chip_m, halo))
            store.verify({c.id: (c.core[2] - c.core[0], c.core[3] - c.core[1]) for c in chips})
        region_det = RegionDetector(inner, image, chips, settings=settings,
                                    reader=options.reader, runner=runner, store=store,
                                    progress=options.progress,
                                    deadline=t_start + SCAN_TIME_SLACK * budget.seconds)
        if options.program is not None:
            answer = agent.run_program(image, options.program, question=question or None,
                                       detector=region_det)
        else:
            answer = agent.ask(image, question, detector=region_det, planner=planner)
    finally:
        if own:
            agent.close()
        _stop(runner, started)
    report = ChipReport(chips=chip_rows(image, chips), coverage=coverage(image, chips))
    report.coverage.update(backend=region_det.runner.name, computed_chips=region_det.computed,
                           scan_s=round(region_det.scan_s, 3))
    report.estimate = cost.to_dict()
    if funnel is not None:
        report.coverage["partial"] = True
        report.coverage["funnel"] = funnel.to_dict()
    if answer.places:
        from viper_rs.region.funnel import place_chips

        place_chips(answer.places, chips)
    answer.notes.extend(n for n in funnel_notes if n not in answer.notes)
    for note in region_det.coverage_notes() + skipped_notes(image):
        if note not in answer.notes:
            answer.notes.append(note)
    empty = nothing_scanned(report)
    if empty is not None:  # first, so no reader takes the value for an answer
        answer.notes.insert(0, empty)
    return answer, report


def estimate_question(
    sources: Sequence[str | Path | Source] | RegionImage,
    question: str = "",
    options: RegionOptions | None = None,
) -> tuple[RegionCost, RegionTooLarge | None]:
    """What :func:`ask_region` with these arguments would cost (no chip is read): the
    estimate for the concepts of ``options.program`` (else of ``question`` as the planner
    plans it; every detector part when neither names one), and the refusal the budget
    gives it, None when it fits."""
    from viper_rs.region.cost import check_budget, estimate_region

    options = options or RegionOptions()
    prep = _prepare(sources, question, options, None)
    est = prep.estimate_args(options)
    cost = estimate_region(prep.image, prep.detector, **est)
    try:
        check_budget(cost, prep.budget, prep.image, prep.detector, **est)
    except RegionTooLarge as exc:
        return cost, exc
    return cost, None


def skipped_notes(image: RegionImage) -> list[str]:
    """A note naming the sources left out because they could not be placed, when any."""
    skipped = image.grid.skipped
    if not skipped:
        return []
    names = "; ".join(why for _, why in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
    return [f"{len(skipped)} source(s) left out of the region: {names}"]


def _funnel(image: RegionImage, chips: list[Chip], program: str | None,
            index: str | Path | ChipIndex | Searcher | None, top: int,
            settings: Settings) -> tuple[Funnel | None, list[str]]:
    """Retrieval first (issue 16.4): with an ``index``, skip the chips it does not point to
    for the ``program``'s concepts. Returns the Funnel (or None) and its notes."""
    if index is None or not program:
        return None, []
    from viper_rs.region.funnel import apply_funnel

    return apply_funnel(image, chips, program, index, top, settings)
