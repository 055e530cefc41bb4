"""``python -m viper_rs index build|search|density|info``: region-scale search over many tiles."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.core.overrides import INDEX_FIELDS, OVERRIDES, add_flags, args_overrides
from viper_rs.core.textsafe import safe_text


def add_parser(sub: Any, model_args: Any) -> None:
    """Add the ``index`` command group to the main parser's subcommands."""
    ix = sub.add_parser("index", help="chip, embed and search many tiles (LanceDB; Ray scale-out)",
                        description=__doc__)
    isub = ix.add_subparsers(dest="index_command", required=True)

    b = isub.add_parser("build", help="chip and embed GeoTIFFs/COGs into an index (incremental)")
    b.add_argument("sources", nargs="*", help="folders, GeoTIFF/COG files or URLs, or .txt lists")
    b.add_argument("--out", type=Path, required=True, help="index folder (created or extended)")
    b.add_argument("--embedder", default="auto", choices=["auto", "spectral", "clip", "graft"],
                   help="auto = GRAFT, then CLIP when weights are found, else spectral fractions")
    b.add_argument("--chip-m", type=float, default=256.0, help="chip side in metres (default 256)")
    b.add_argument("--overlap", type=float, default=0.25,
                   help="overlap between neighbouring chips, 0..<1 (default 0.25)")
    b.add_argument("--min-valid", type=float, default=0.5,
                   help="skip chips with less than this fraction of valid pixels (default 0.5)")
    b.add_argument("--workers", type=int, default=1,
                   help="local worker processes (default 1); with --ray-address: Ray actors")
    b.add_argument("--ray-address", metavar="ADDR",
                   help="run on Ray: local (start one here), auto (the running cluster), "
                        "HOST:PORT or ray://HOST:PORT")
    b.add_argument("--batch", type=int, default=16, help="chips per task (default 16)")
    b.add_argument("--ann", default="auto", choices=["auto", "always", "never"],
                   help="ANN (IVF-SQ) index: auto = from 50,000 chips on")
    g = b.add_argument_group("STAC search (online)")
    g.add_argument("--stac", metavar="URL", help="STAC API to search, e.g. the Planetary Computer")
    g.add_argument("--collection", default="naip", help="STAC collection (default naip)")
    g.add_argument("--bbox", help="W,S,E,N in degrees (write --bbox=-122.5,37.6,-122.3,37.8 when W is negative)")
    g.add_argument("--datetime", help="STAC datetime or range, e.g. 2022 or 2020/2022")
    g.add_argument("--max-items", type=int, default=50, help="most STAC items (default 50)")
    g.add_argument("--asset", help="asset key (default: image, visual or data)")
    b.add_argument("--no-overlays", action="store_true",
                   help="do not draw the sources' low-resolution map imagery (overlays/)")
    b.add_argument("--no-attributes", action="store_true",
                   help="do not measure the chips' building/road/water/vegetation cover "
                        "and building count (faster; such searches rank by embedding only)")
    add_flags(b.add_argument_group("budget (checked before any chip is read)"), INDEX_FIELDS)
    b.add_argument("--json", action="store_true", help="print the build report as JSON")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    model_args(b)

    s = isub.add_parser("search", help="the chips that best match a text query")
    s.add_argument("index", type=Path, help="index folder")
    s.add_argument("query", help='text, e.g. "water" or "tennis courts"')
    s.add_argument("--k", type=int, default=20, help="results (default 20)")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the hits as JSON")
    fmt.add_argument("--geojson", action="store_true",
                     help="print an RFC 7946 FeatureCollection of the hits' footprints")
    s.add_argument("--exact", action="store_true", help="brute force even when an ANN index exists")
    s.add_argument("--rank", default="auto", choices=["auto", "embedding"],
                   help="auto: by the measured cover a query names (buildings, roads, water, "
                        "vegetation), else by embedding; embedding: always by embedding")
    s.add_argument("--bbox", help="only chips intersecting W,S,E,N (degrees)")
    model_args(s)

    d = isub.add_parser("density", help="write a georeferenced score raster (and PNG) of a query")
    d.add_argument("index", type=Path, help="index folder")
    d.add_argument("query", help='text, e.g. "water"')
    d.add_argument("--out", type=Path, required=True, help="output GeoTIFF (a .png is written beside)")
    d.add_argument("--resolution", type=float, help="cell size in metres (default: half the chip stride)")
    d.add_argument("--no-png", action="store_true", help="GeoTIFF only")
    d.add_argument("--bbox", help="only chips intersecting W,S,E,N (degrees)")
    d.add_argument("--json", action="store_true", help="print what was written as JSON")
    model_args(d)

    i = isub.add_parser("info", help="what an index holds")
    i.add_argument("index", type=Path, help="index folder")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run an ``index`` subcommand; returns the exit code."""
    cmd = args.index_command
    if cmd == "build":
        return _build(args, settings)
    if cmd == "info":
        from viper_rs.index.store import ChipIndex

        index = ChipIndex.open(args.index)
        info = {**index.meta.__dict__, "chips": len(index), "ann_index": index.has_ann(),
                "sources": index.sources()}
        print(json.dumps(info, indent=2))
        return 0
    from viper_rs.index.query import Searcher

    searcher = Searcher(args.index, settings)
    if cmd == "search":
        result = searcher.search(args.query, k=args.k, exact=True if args.exact else None,
                                 bbox=_bbox(args.bbox) if args.bbox else None, rank=args.rank)
        if args.geojson:
            print(json.dumps(result.geojson()))
        elif args.json:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            _print_hits(result)
        return 0
    dm = searcher.density(args.query, args.out, args.resolution, png=not args.no_png,
                          bbox=_bbox(args.bbox) if args.bbox else None)
    if args.json:
        print(json.dumps(dm.to_dict(), indent=2))
    else:
        _say(f"wrote {dm.tif} ({dm.width}x{dm.height}, {dm.resolution:.3g} m cells, {dm.crs}; "
             f"{dm.chips} chips, scores {dm.min_score:.3f}..{dm.max_score:.3f})"
             + (f" and {dm.png}" if dm.png else ""))
        for note in dm.notes:
            _say(f"note: {note}")
    return 0


def _build(args: argparse.Namespace, settings: Settings) -> int:
    from viper_rs.index.build import build_index
    from viper_rs.index.chips import ChipGrid
    from viper_rs.tiling.sources import stac_sources

    extra = []
    skipped: list[tuple[str, str]] = []
    if args.stac:
        bbox = _bbox(args.bbox) if args.bbox else None
        found = stac_sources(args.stac, args.collection, bbox, args.datetime, args.max_items,
                             args.asset)
        extra, skipped = found.sources, found.skipped
    if not args.sources and not extra:
        raise InputError("nothing to index: give folders/files/URLs, or --stac with --bbox")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    budget = {k: v for k, v in args_overrides(args, INDEX_FIELDS).items() if v is not None}
    for name, value in budget.items():
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{OVERRIDES[name].flag} must be a positive number, got {value:g}")
    settings = settings.model_copy(update=budget)
    report = build_index(
        args.sources, args.out, embedder=args.embedder, settings=settings,
        grid=ChipGrid(args.chip_m, args.overlap), min_valid=args.min_valid,
        workers=args.workers, ray_address=args.ray_address, batch_chips=args.batch,
        extra_sources=extra, ann=args.ann, progress=not args.quiet and not args.json,
        overlays=not args.no_overlays, attributes=not args.no_attributes,
    )
    report.skipped_sources = skipped + report.skipped_sources
    if args.json:
        d = dict(report.__dict__)
        if report.overlays is not None:
            d["overlays"] = dict(report.overlays.__dict__)
        d["chips_per_s"] = round(report.chips_per_s, 2)
        print(json.dumps(d, indent=2, default=str))
    else:
        for line in report.summary().split("\n"):  # each line made safe by summary()
            _say(line)
    return 0 if (report.indexed or report.existing or report.empty) else 1


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4 or not (vals[0] < vals[2] and vals[1] < vals[3]):
        raise InputError(f"--bbox must be W,S,E,N degrees with W<E and S<N, got {text!r}")
    return (vals[0], vals[1], vals[2], vals[3])


def _print_hits(result: Any) -> None:
    from viper_rs.index.attributes import BY_COLUMN, describe

    _say(f"{len(result.hits)} best of {result.total} chips for {result.query!r} "
         f"({result.embedder}, {result.ms:.0f} ms)")
    for note in result.notes:
        _say(f"note: {note}")
    attr = BY_COLUMN.get(result.ranked_by or "")
    for h in result.hits:
        lon, lat = h.center
        c, r, w, hh = h.window
        measured = ("  " + describe(h.attributes, h.measured_by, h.unknown, attr)) if attr else ""
        _say(f"{h.rank:3d}. {h.score:7.4f}  {lat:.5f},{lon:.5f}  {h.source_name} "
             f"[{c},{r} {w}x{hh}]" + (f"  {h.datetime}" if h.datetime else "") + measured)


def _say(text: str) -> None:
    """Print one line made safe for the terminal (:func:`viper_rs.core.textsafe.safe_text`: the
    file names and messages in it cannot move the cursor or split the line)."""
    print(safe_text(text, encoding=getattr(sys.stdout, "encoding", None)), flush=True)
