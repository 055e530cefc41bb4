"""Building an index: chip the sources, skip chips already indexed, embed and measure the
rest (the chip attributes of :mod:`viper_rs.index.attributes`), store.

Chip reading and embedding run in batches on one of three backends:

* in this process (``workers=1``, the default);
* local worker processes (``workers>1``, :class:`concurrent.futures.ProcessPoolExecutor`);
* a Ray cluster (``ray_address``: ``local`` starts one on this machine, ``auto`` joins
  the running cluster, ``HOST:PORT`` or ``ray://HOST:PORT`` a remote one). Each Ray actor
  builds the embedder once and takes batches from a :class:`ray.util.ActorPool`.

Only this process writes to LanceDB, as batches come back, so an interrupted build keeps
every chip finished so far and the next run goes on from there. Chips already indexed whose
attributes are missing (an index of an older format, or one built with ``attributes=False``)
or were measured by other models are read again and only measured.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, ImageError, InputError, first_line
from viper_rs.core.geo import GeoImage
from viper_rs.core.textsafe import safe_text
from viper_rs.index.attributes import (
    INFO_COLUMN,
    AttributeSpec,
    ChipAttributer,
    ChipMeasures,
    parse_info,
)
from viper_rs.index.chips import DEFAULT_MIN_VALID, ChipGrid, chip_image, plan
from viper_rs.index.cost import (
    IndexBudget,
    check_build,
    estimate_build,
    estimate_source,
    source_over_budget,
)
from viper_rs.index.embedders import EmbedderSpec, build_chip_embedder, resolve_name
from viper_rs.index.overlays import OverlayReport, update_overlays
from viper_rs.index.store import ANN_MIN_ROWS, ChipIndex, IndexMeta
from viper_rs.tiling.chips import Chip
from viper_rs.tiling.sources import Source, scan

log = logging.getLogger(__name__)

#: Chips per task sent to a worker.
DEFAULT_BATCH = 16
#: Rows buffered before one LanceDB append.
WRITE_ROWS = 2048


@dataclass
class BatchResult:
    """What a worker returns for one batch of chips."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    vectors: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # mostly nodata
    failed: list[tuple[str, str]] = field(default_factory=list)  # read/embed errors
    #: Attributes of chips already indexed (``id`` + attribute columns), re-measured.
    measured: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BuildReport:
    """Counts and timing of one build."""

    index: str
    embedder: str
    model_id: str
    backend: str
    sources: int = 0
    skipped_sources: list[tuple[str, str]] = field(default_factory=list)
    chips: int = 0
    existing: int = 0
    indexed: int = 0
    empty: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    total_rows: int = 0
    stale: int = 0  # chips of changed files removed before re-indexing them
    ann: bool = False
    seconds: float = 0.0
    #: Time from the first batch sent to the last result stored (workers' start included).
    embed_seconds: float = 0.0
    #: The map imagery drawn for the sources (None when not asked for).
    overlays: OverlayReport | None = None
    #: What measured the chip attributes ("" when the build did not measure them).
    attributes: str = ""
    #: Chips indexed before whose attributes this run measured (older format or models).
    remeasured: int = 0
    #: Chips still without this recipe's attributes (their sources were not in this run).
    unmeasured: int = 0
    #: Why attributes are unknown ("concept: reason") and on how many chips measured here.
    unknown: dict[str, int] = field(default_factory=dict)

    @property
    def chips_per_s(self) -> float:
        """Chips read, embedded and measured per second of the embedding phase."""
        done = self.indexed + self.remeasured + self.empty + len(self.failed)
        return done / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def count_unknown(self, info: str | None) -> None:
        """Count the unknown attributes of one chip (its info JSON)."""
        for concept, why in parse_info(info)[1].items():
            key = f"{concept}: {why}"
            self.unknown[key] = self.unknown.get(key, 0) + 1

    def summary(self) -> str:
        """One paragraph for the terminal."""
        lines = [
            f"index {self.index}: {self.total_rows} chips ({self.embedder}, {self.model_id})",
            f"  this run: {self.sources} sources, {self.chips} chips planned, "
            f"{self.existing} already indexed, {self.indexed} added"
            + (f" ({self.stale} of changed files replaced)" if self.stale else "")
            + f", {self.empty} mostly "
            f"nodata, {len(self.failed)} failed; {self.seconds:.1f} s "
            f"({self.chips_per_s:.1f} chips/s, {self.backend})",
        ]
        if self.attributes:
            lines.append("  chip attributes (building, road, water, vegetation cover; "
                         "building count) measured"
                         + (f"; {self.remeasured} indexed chips measured again (older index "
                            "or other models)" if self.remeasured else ""))
            for why, n in sorted(self.unknown.items(), key=lambda kv: -kv[1])[:5]:
                lines.append(f"    unknown on {n} chips: {why}")
            if self.unmeasured:
                lines.append(f"  {self.unmeasured} indexed chips of sources not in this run "
                             "still lack attributes")
        else:
            lines.append("  chip attributes not measured (--no-attributes): searches rank "
                         "new chips by their embeddings only")
        if self.ann:
            lines.append("  ANN index (IVF-SQ) built")
        if self.overlays is not None:
            lines.append("  " + self.overlays.summary())
        if self.skipped_sources:
            lines.append(f"  {len(self.skipped_sources)} sources not indexed:")
            for why, n in _reason_counts(self.skipped_sources):
                lines.append(f"    {n} x {why}")
        for cid, why in self.failed[:10]:
            lines.append(f"  failed chip {cid}: {why}")
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more failed chips")
        # Each line made safe: a file name's own line break or escape sequence stays in it.
        return "\n".join(safe_text(line) for line in lines)


def _reason_counts(items: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """Reasons with the path prefix removed, most frequent first, with one example."""
    counts: dict[str, list[str]] = {}
    for uri, why in items:
        general = why[len(uri) + 2:] if why.startswith(uri + ": ") else why
        counts.setdefault(general, []).append(Path(uri.split("?")[0]).name)
    return [(f"{why} (e.g. {names[0]})", len(names))
            for why, names in sorted(counts.items(), key=lambda kv: -len(kv[1]))]


# ---------------------------------------------------------------------------- workers
def embed_batch(embedder: Any, chips: Sequence[Chip], min_valid: float,
                attributer: ChipAttributer | None = None, embed: bool = True) -> BatchResult:
    """Read, embed and measure one batch of chips (runs in a worker). With ``embed``
    False the chips are already indexed: only their attributes are measured
    (``BatchResult.measured``)."""
    result = BatchResult()
    images, kept = [], []
    for chip in chips:
        try:
            image = chip_image(chip)
        except ImageError as exc:
            if "every pixel is nodata" in str(exc):
                result.skipped.append((chip.id, "no valid pixels"))
            else:
                result.failed.append((chip.id, str(exc)))
            continue
        frac = float(image.valid.mean())
        if frac < min_valid:
            result.skipped.append((chip.id, f"{frac:.0%} valid pixels"))
            continue
        images.append(image)
        kept.append((chip, frac, image.white_point))
    if not embed:
        if attributer is not None:
            result.measured = [{"id": chip.id, **_measure(attributer, image).columns(
                attributer.recipe)} for (chip, _, _), image in zip(kept, images, strict=True)]
        return result
    # An embedder whose per-chip work the attributer reuses (the spectral class maps, in
    # a small cache) runs chip by chip, each chip measured right after it is embedded.
    step = 1 if attributer is not None and embedder.detector is not None \
        else max(1, len(images))
    vectors, good, attrs = [], [], []
    for i in range(0, len(images), step):
        part = images[i:i + step]
        vecs, ok = _embed(embedder, part, [c.id for c, _, _ in kept[i:i + step]], result)
        for j in ok:
            vectors.append(vecs[j])
            good.append(kept[i + j])
            if attributer is not None:
                attrs.append(_measure(attributer, part[j]).columns(attributer.recipe))
    result.rows = [_row(chip, frac, wp) for chip, frac, wp in good]
    for row, columns in zip(result.rows, attrs, strict=False):
        row.update(columns)
    dim = int(embedder.dim)
    result.vectors = (np.stack(vectors).astype(np.float32) if vectors
                      else np.zeros((0, dim), np.float32)).reshape(len(good), dim)
    return result


def _embed(embedder: Any, images: list[GeoImage], ids: list[str],
           result: BatchResult) -> tuple[np.ndarray, list[int]]:
    """Vectors of ``images`` and the positions that embedded; a failing batch is retried
    image by image and the bad ones recorded in ``result.failed``."""
    if not images:
        return np.zeros((0, int(embedder.dim)), np.float32), []
    try:
        return np.asarray(embedder.embed(images), np.float32), list(range(len(images)))
    except Exception as exc:  # noqa: BLE001 - one bad batch must not end the build
        if len(images) == 1:
            result.failed.append((ids[0], f"embedding failed: {exc}"))
            return np.zeros((1, int(embedder.dim)), np.float32), []
    vecs = np.zeros((len(images), int(embedder.dim)), np.float32)
    ok = []
    for j, image in enumerate(images):  # find the bad chip(s): embed one by one
        try:
            vecs[j] = embedder.embed([image])[0]
            ok.append(j)
        except Exception as one:  # noqa: BLE001
            result.failed.append((ids[j], f"embedding failed: {one}"))
    return vecs, ok


def _measure(attributer: ChipAttributer, image: GeoImage) -> ChipMeasures:
    """The chip's attributes; a chip the attributer fails on has them all unknown."""
    try:
        return attributer.measure(image)
    except Exception as exc:  # noqa: BLE001 - one bad chip must not end the build
        log.warning("attributes of %s not measured: %s", image.name, first_line(exc))
        return ChipMeasures.all_unknown(f"not measured: {first_line(exc)}")


def _row(chip: Chip, valid: float, white_point: float) -> dict[str, Any]:
    s = chip.sources[0]
    assert chip.bbox is not None and chip.corners is not None  # set by index.chips.plan
    w, so, e, n = chip.bbox
    col, row, width, height = chip.window
    return {
        "id": chip.id, "source": s.uri, "source_name": s.name, "source_key": s.key,
        "fingerprint": s.fingerprint, "datetime": s.datetime,
        "crs": s.crs, "col": col, "row": row, "width": width,
        "height": height, "west": w, "south": so, "east": e, "north": n,
        "corners": list(chip.corners), "white_point": float(white_point), "valid": valid,
    }


_WORKER: tuple[Any, ChipAttributer | None] | None = None


def _build_worker(spec: EmbedderSpec, attributes: AttributeSpec | None
                  ) -> tuple[Any, ChipAttributer | None]:
    """A worker's embedder and attributer (sharing the spectral detector when there is one)."""
    embedder = spec.build()
    attributer = attributes.build(embedder.detector) if attributes else None
    return embedder, attributer


def _init_process(spec: EmbedderSpec, attributes: AttributeSpec | None = None) -> None:
    global _WORKER
    if spec.name != "spectral" or attributes is not None:  # torch only when it is used
        import torch

        torch.set_num_threads(1)
    _WORKER = _build_worker(spec, attributes)


def _process_batch(chips: list[Chip], min_valid: float, embed: bool = True) -> BatchResult:
    assert _WORKER is not None
    return embed_batch(_WORKER[0], chips, min_valid, _WORKER[1], embed)


class RayChipWorker:
    """A Ray actor body: builds the embedder and attributer once, then handles batches."""

    def __init__(self, spec: EmbedderSpec, min_valid: float,
                 attributes: AttributeSpec | None = None) -> None:
        self.embedder, self.attributer = _build_worker(spec, attributes)
        self.min_valid = min_valid

    def run(self, task: tuple[list[Chip], bool]) -> BatchResult:
        """Read, embed (when the task says so) and measure one batch."""
        chips, embed = task
        return embed_batch(self.embedder, chips, self.min_valid, self.attributer, embed)


# ---------------------------------------------------------------------------- backends
#: One unit of work: chips and whether to embed them (False: measure attributes only).
Task = tuple[list[Chip], bool]


def _batches(chips: Sequence[Chip], size: int, embed: bool = True) -> list[Task]:
    return [(list(chips[i:i + size]), embed) for i in range(0, len(chips), size)]


def run_local(embedder: Any, attributer: ChipAttributer | None, spec: EmbedderSpec,
              attributes: AttributeSpec | None, tasks: list[Task], workers: int,
              min_valid: float) -> Iterator[BatchResult]:
    """Results of every task from this process or a local process pool."""
    if workers <= 1:
        for chips, embed in tasks:
            yield embed_batch(embedder, chips, min_valid, attributer, embed)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_process, initargs=(spec, attributes)) as pool:
        futures = [pool.submit(_process_batch, chips, min_valid, embed) for chips, embed in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def connect_ray(address: str, num_cpus: int | None = None, timeout_s: float = 10.0) -> bool:
    """Connect to (or start, for ``local``) a Ray cluster; True when this call did it.

    A ``HOST:PORT`` (or ``ray://HOST:PORT``) that does not answer within ``timeout_s``
    is a clear error at once (Ray itself would retry for minutes)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray-address needs Ray: pip install 'ray[default]'") from None
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "ignore_reinit_error": True}
    if address in ("local", ""):
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
        return True
    if address != "auto":
        _check_reachable(address, timeout_s)
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError...
        hint = ""
        if address != "auto" and not os.environ.get("RAY_AUTH_MODE"):
            hint = ("; if the cluster uses Ray's token authentication (the default of "
                    "`ray start`), set RAY_AUTH_MODE=token (the token comes from "
                    "RAY_AUTH_TOKEN or ~/.ray/auth_token)")
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {first_line(exc)}{hint}"
                          ) from None
    return True


def _check_reachable(address: str, timeout_s: float) -> None:
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be local, auto, HOST:PORT or ray://HOST:PORT; "
                          f"got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({exc})") from None


def run_ray(spec: EmbedderSpec, attributes: AttributeSpec | None, tasks: list[Task],
            workers: int | None, min_valid: float) -> Iterator[BatchResult]:
    """Results of every task from a pool of Ray actors (one per CPU unless ``workers``),
    on the cluster :func:`connect_ray` joined."""
    import ray
    from ray.util import ActorPool

    if not tasks:
        return
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = max(1, min(workers or cpus, len(tasks)))
    actor = ray.remote(num_cpus=1)(RayChipWorker)
    pool = ActorPool([actor.remote(spec, min_valid, attributes) for _ in range(n)])
    yield from pool.map_unordered(lambda a, t: a.run.remote(t), tasks)


# ---------------------------------------------------------------------------- build
def build_index(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    embedder: str = "auto",
    settings: Settings | None = None,
    grid: ChipGrid | None = None,
    min_valid: float = DEFAULT_MIN_VALID,
    workers: int = 1,
    ray_address: str | None = None,
    batch_chips: int = DEFAULT_BATCH,
    extra_sources: Sequence[Source] = (),
    ann: str = "auto",
    progress: bool = True,
    on_progress: Any = None,
    overlays: bool = True,
    attributes: bool = True,
) -> BuildReport:
    """Index ``inputs`` (folders, files, list files, URLs) into the LanceDB index ``out``.

    Re-running adds only chips not indexed yet. ``ann``: ``auto`` builds the IVF-SQ index
    once the table has :data:`ANN_MIN_ROWS` chips, ``always``/``never`` force it.
    ``on_progress(done, total)`` is called after every batch (the UI's progress bar).
    ``overlays`` also draws (or updates) each source's low-resolution map picture
    (:mod:`viper_rs.index.overlays`). ``attributes`` measures every chip's attributes
    (:mod:`viper_rs.index.attributes`: building, road, water, vegetation cover, building
    count), also on chips indexed before without them or with other models (an index of an
    older format is upgraded in place); False indexes new chips without them.
    """
    t0 = time.perf_counter()
    settings = settings or Settings()
    grid = grid or ChipGrid()
    if not 0 <= min_valid <= 1:
        raise InputError(f"min_valid must be in [0, 1], got {min_valid}")
    if ann not in ("auto", "always", "never"):
        raise InputError(f"ann must be auto, always or never, got {ann!r}")
    opts = BuildOptions(embedder, settings, grid, min_valid, workers, ray_address,
                        max(1, int(batch_chips)), ann, progress, on_progress, overlays,
                        bool(attributes))
    started = connect_ray(ray_address, num_cpus=workers if workers > 1 else None) \
        if ray_address else False
    try:
        return _build(inputs, out, extra_sources, opts, t0)
    finally:
        if started:
            import ray

            ray.shutdown()


@dataclass(frozen=True)
class BuildOptions:
    """How :func:`build_index` runs (its keyword arguments, checked)."""

    embedder: str
    settings: Settings
    grid: ChipGrid
    min_valid: float
    workers: int
    ray_address: str | None
    batch_chips: int
    ann: str
    progress: bool
    on_progress: Any
    overlays: bool = True
    attributes: bool = True

    @property
    def backend(self) -> str:
        """Where chips are embedded, for the report."""
        if self.ray_address:
            return f"ray({self.ray_address})"
        return f"{self.workers} processes" if self.workers > 1 else "in-process"


def _build(inputs: Sequence[str | Path], out: str | Path, extra_sources: Sequence[Source],
           o: BuildOptions, t0: float) -> BuildReport:
    name, settings = resolve_name(o.embedder, o.settings)
    spec = EmbedderSpec.of(name, settings)
    model = build_chip_embedder(name, settings)
    attr_spec = AttributeSpec.of(settings) if o.attributes else None
    attributer = attr_spec.build(model.detector) if attr_spec else None
    meta = IndexMeta(embedder=name, model_id=model.model_id, dim=int(model.dim),
                     chip_m=float(o.grid.chip_m), overlap=float(o.grid.overlap),
                     min_valid=float(o.min_valid),
                     dimensions=list(model.dimensions) if model.dimensions else None)
    found = scan(inputs, extra=extra_sources)
    if not found.sources:
        reasons = "; ".join(why for _, why in found.skipped[:5])
        raise InputError("no indexable imagery (GeoTIFF/COG with a CRS and R,G,B bands) in "
                         f"{', '.join(map(str, inputs)) or 'the inputs'}"
                         + (f": {reasons}" if reasons else ""))
    budget = IndexBudget.from_settings(settings)
    buildings = attributer is not None and "buildingnet=" in attributer.recipe
    costs = [estimate_source(s, o.grid, name, attributer is not None, buildings)
             for s in found.sources]
    sources, over = [], []
    for s, cost in zip(found.sources, costs, strict=True):
        why = source_over_budget(cost, budget)
        if why is None:
            sources.append((s, cost))
        else:
            over.append((s.uri, why))
            log.info("%s", safe_text(why))
    if not sources:
        raise InputError(f"no source fits the index build's budget: {over[0][1]}"
                         + (f" (and {len(over) - 1} more)" if len(over) > 1 else ""))
    kept = [s for s, _ in sources]
    if ChipIndex.exists(out):  # a build adding to an index: only its new chips count
        index = ChipIndex.create(out, meta)
        indexed = index.indexed_counts()
        unmeasured = len(index.unmeasured_ids(attributer.recipe)) if attributer else 0
        have = sum(indexed.get((s.key, s.fingerprint), 0) for s in kept)
        cost = estimate_build([c for _, c in sources], name, attributer is not None,
                              indexed=have, remeasure=min(unmeasured, have),
                              known_ids=sum(indexed.values()), buildings=buildings)
        check_build(cost, budget)
    else:  # refused before anything is written
        cost = estimate_build([c for _, c in sources], name, attributer is not None,
                              buildings=buildings)
        check_build(cost, budget)
        index = ChipIndex.create(out, meta)
    log.info("index build: %s", cost.describe())
    report = BuildReport(index=str(out), embedder=name, model_id=meta.model_id,
                         backend=o.backend, sources=len(kept),
                         skipped_sources=found.skipped + over,
                         attributes=attributer.recipe if attributer else "")
    chips = [c for s in kept for c in plan(s, o.grid)]
    report.stale = sum(index.forget_stale(s.key, s.fingerprint) for s in kept)
    known = index.known_ids()
    todo = [c for c in chips if c.id not in known]
    report.chips, report.existing = len(chips), len(chips) - len(todo)
    pending = index.unmeasured_ids(attributer.recipe) if attributer else set()
    again = [c for c in chips if c.id in pending]
    if pending:
        log.info("%s: measuring the attributes of %d chips indexed without them (or with "
                 "other models)", out, len(again))
    report.unmeasured = len(pending) - len(again)  # chips of sources not in this run
    tasks = _batches(todo, o.batch_chips) + _batches(again, o.batch_chips, embed=False)
    if o.ray_address:
        results = run_ray(spec, attr_spec, tasks, o.workers if o.workers > 1 else None,
                          o.min_valid)
    else:
        results = run_local(model, attributer, spec, attr_spec, tasks, o.workers, o.min_valid)
    t_embed = time.perf_counter()
    try:
        _store(index, results, report, len(todo) + len(again), o)
    finally:
        report.embed_seconds = time.perf_counter() - t_embed
    if report.indexed or report.remeasured:
        index.compact()
    report.total_rows = len(index)
    if o.ann == "always" or (o.ann == "auto" and report.total_rows >= ANN_MIN_ROWS
                             and (report.indexed or not index.has_ann())):
        index.build_ann()
        report.ann = True
    if o.overlays:  # the chips are stored: a map picture that fails must not fail the build
        try:
            report.overlays = update_overlays(out, kept)
        except OSError as exc:
            log.warning("map imagery of %s not written: %s", out, exc)
            report.overlays = OverlayReport(skipped=[(str(out), f"not written: {exc}")])
    report.seconds = time.perf_counter() - t0
    return report


def _store(index: ChipIndex, results: Iterator[BatchResult], report: BuildReport, total: int,
           o: BuildOptions) -> None:
    """Append batch results to the index as they come (every ``WRITE_ROWS`` rows, and what
    is left when the results end or fail), counting them in ``report``."""
    bar = _bar(total, o.progress)
    rows: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []
    measured: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    done = 0

    def flush() -> None:
        if rows:
            index.add(rows, np.concatenate(vecs))
            rows.clear()
            vecs.clear()
        if measured:
            index.set_attributes(measured)
            measured.clear()
        index.add_skipped(skipped)
        skipped.clear()

    try:
        for res in results:
            rows.extend(res.rows)
            if res.vectors is not None and len(res.rows):
                vecs.append(res.vectors)
            measured.extend(res.measured)
            skipped.extend(res.skipped)
            report.indexed += len(res.rows)
            report.remeasured += len(res.measured)
            report.empty += len(res.skipped)
            report.failed.extend(res.failed)
            for r in (*res.rows, *res.measured):
                report.count_unknown(r.get(INFO_COLUMN))
            n = len(res.rows) + len(res.measured) + len(res.skipped) + len(res.failed)
            done += n
            if bar is not None:
                bar.update(n)
            if o.on_progress is not None:
                o.on_progress(done, total)
            if len(rows) + len(measured) >= WRITE_ROWS:
                flush()
    finally:
        flush()
        if bar is not None:
            bar.close()


def _bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chip", desc="indexing", smoothing=0.1)
