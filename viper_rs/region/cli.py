"""``python -m viper_rs region SOURCES... -q QUESTION``: one question about a region."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viper_rs.agent.exports import write_regions_geojson, write_regions_gpkg
from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.core.overrides import add_flags
from viper_rs.core.textsafe import safe_text

if TYPE_CHECKING:
    from viper_rs.region.api import RegionOptions


def add_parser(sub: Any, model_args: Any, llm_args: Any) -> None:
    """Add the ``region`` command to the main parser's subcommands."""
    from viper_rs.region.chips import CHIP_M, HALO_M

    rg = sub.add_parser("region", help="answer a question about a region of many tiles",
                        description=__doc__)
    rg.add_argument("sources", nargs="+", help="folders, GeoTIFF/COG files or URLs, or .txt lists")
    rg.add_argument("-q", "--question", required=True, help="the question")
    rg.add_argument("--bbox", help="W,S,E,N in degrees (write --bbox=-74.1,40.6,-74.0,40.7 "
                                   "when W is negative); default: the sources' union")
    rg.add_argument("--chip-m", type=float, default=CHIP_M,
                    help=f"chip core side in metres (default {CHIP_M:g})")
    rg.add_argument("--halo-m", default="auto",
                    help="context read around each chip, metres; auto (default): twice the reach "
                         f"of the spectral detector's rules at the working pixel size, {HALO_M:g} "
                         "for other detectors")
    rg.add_argument("--gsd", "--pixel-m", dest="pixel_m", type=float, metavar="M",
                    help="working pixel size in metres (default: the finest of the sources "
                         "that meet the area)")
    rg.add_argument("--max-memory-mb", type=int, metavar="MB",
                    help="refuse, before reading any chip, a question whose estimated peak "
                         "memory (all processes) is over MB (default 12000; "
                         "VIPER_RS_REGION_MAX_MEMORY_MB)")
    rg.add_argument("--max-time-s", type=float, metavar="S",
                    help="refuse a question whose estimated time is over S seconds; a scan "
                         "still running after twice S stops (default 3600; "
                         "VIPER_RS_REGION_MAX_TIME_S)")
    rg.add_argument("--estimate", action="store_true",
                    help="print the estimate (pixels, chips, memory, time) and whether it "
                         "fits the budget, and read no chip")
    rg.add_argument("--index", type=Path, metavar="PATH",
                    help="chip index (python -m viper_rs index build): analyse only the chips "
                         "meeting its best --top chips for the question's concepts, and their "
                         "neighbours (a partial scan)")
    rg.add_argument("--top", type=int, default=10, metavar="K",
                    help="with --index: index chips kept per concept (default 10)")
    rg.add_argument("--workers", type=int, default=1,
                    help="local worker processes for the chips (default 1: this process); "
                         "with --ray-address, the number of Ray actors")
    rg.add_argument("--ray-address", metavar="ADDR",
                    help="run chips on Ray: local (start one here), auto (the running cluster) "
                         "or HOST:PORT / ray://HOST:PORT")
    rg.add_argument("--resume", type=Path, metavar="DIR",
                    help="store finished chips in DIR; run again with the same arguments to "
                         "go on after an interruption")
    rg.add_argument("--no-progress", action="store_true", help="no chip progress bar on stderr")
    add_flags(rg, ("detector", "planner", "small_max_m2", "large_min_m2", "sandbox_wall_s"))
    rg.add_argument("--json", action="store_true",
                    help="print one JSON object: the keys of ask --json plus chips and coverage")
    rg.add_argument("--geojson", type=Path, metavar="FILE",
                    help="write the answer's regions as a WGS84 GeoJSON FeatureCollection")
    rg.add_argument("--gpkg", type=Path, metavar="FILE",
                    help="write the answer's regions as a GeoPackage (layer 'regions', the "
                         "working CRS)")
    llm_args(rg)
    model_args(rg)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the ``region`` command; returns the exit code (2 on bad input)."""
    from viper_rs.region.api import ask_region, nothing_scanned

    if not args.question.strip():
        raise InputError("give a question with -q")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    settings = _with_budget(args, settings)
    if args.estimate:
        return _print_estimate(args, settings)
    answer, report = ask_region(args.sources, args.question, _options(
        args, settings, resume=args.resume, progress=not args.no_progress,
        **({"index": str(args.index), "top": args.top} if args.index else {}),
    ))
    if answer.error is not None and answer.error.get("type") == "planning":
        raise InputError(f"the question is outside the planner's reach: {answer.error.get('message')}")
    empty = nothing_scanned(report)
    if empty is not None:  # never an answer such as "0" about ground nobody saw
        raise InputError(empty)
    if args.geojson:
        write_regions_geojson(answer, args.geojson)
    if args.gpkg:
        write_regions_gpkg(answer, args.gpkg)
    if args.json:
        print(answer.to_json(extra={"chips": report.chips, "coverage": report.coverage,
                                    "estimate": report.estimate}), flush=True)
    else:
        cov = report.coverage
        ok = sum(1 for c in report.chips if c["status"] == "ok")
        _say(answer.answer)
        _say(f"  chips: {ok} ok of {len(report.chips)}; scanned {cov['scanned_m2']:.0f} m2 "
             f"({100 * cov['share']:.1f}% of the area){'; PARTIAL' if cov['partial'] else ''}")
        for note in answer.notes:
            _say(f"  note: {note}")
    if answer.error is not None:
        _say(f"viper-rs: {answer.error.get('type')}: {answer.error.get('message')}", sys.stderr)
        return 1
    return 0


def _options(args: argparse.Namespace, settings: Settings, **extra: Any) -> RegionOptions:
    """The region options the flags give (those of the question and ``--estimate``), and
    ``extra`` fields."""
    from viper_rs.region.api import RegionOptions

    return RegionOptions(bbox=args.bbox, chip_m=args.chip_m, halo_m=args.halo_m,
                         settings=settings, pixel_m=args.pixel_m, workers=args.workers,
                         ray_address=args.ray_address, **extra)


def _with_budget(args: argparse.Namespace, settings: Settings) -> Settings:
    """``settings`` with the budget flags given (InputError when one is not positive)."""
    update: dict[str, Any] = {}
    for flag, name in (("max_memory_mb", "region_max_memory_mb"), ("max_time_s", "region_max_time_s")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"--{flag.replace('_', '-')} must be a positive number, got {value:g}")
        update[name] = value
    if args.pixel_m is not None and not (math.isfinite(args.pixel_m) and args.pixel_m > 0):
        raise InputError(f"--gsd must be a positive number of metres, got {args.pixel_m:g}")
    return settings.model_copy(update=update) if update else settings


def _print_estimate(args: argparse.Namespace, settings: Settings) -> int:
    """``--estimate``: the estimate and whether it fits the budget; no chip is read."""
    import json

    from viper_rs.core.cost import Budget
    from viper_rs.region.api import estimate_question
    from viper_rs.region.cost import RegionTooLarge

    cost, refusal = estimate_question(args.sources, args.question, _options(args, settings))
    budget = Budget.for_region(settings)
    if args.json:
        print(json.dumps({"estimate": cost.to_dict(), "fits": refusal is None,
                          "budget": {"memory_bytes": budget.memory_bytes,
                                     "seconds": budget.seconds},
                          "refusal": None if refusal is None else str(refusal),
                          "fit_pixel_m": None if not isinstance(refusal, RegionTooLarge)
                          else refusal.fit_pixel_m}), flush=True)
    else:
        _say(f"Estimate: {cost.describe()}.")
        _say(f"Budget: {budget.describe()}: " + ("fits." if refusal is None else str(refusal)))
    return 0


def _say(text: str, stream: Any = None) -> None:
    """Print one line made safe for the terminal (:func:`viper_rs.core.textsafe.safe_text`: the
    file names and messages in it cannot move the cursor or split the line)."""
    stream = stream if stream is not None else sys.stdout
    print(safe_text(text, encoding=getattr(stream, "encoding", None)), file=stream, flush=True)
