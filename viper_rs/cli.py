"""Command line: ``python -m viper_rs ask|run|tools``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from viper_rs.config import Settings
from viper_rs.errors import ImageError, ViperError

log = logging.getLogger("viper_rs")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (all subcommands)."""
    p = argparse.ArgumentParser(prog="python -m viper_rs", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True)

    def image_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("image", help="GeoTIFF/COG, PNG or JPEG")
        sp.add_argument("--gsd", type=float, help="metres per pixel for images without a CRS")
        sp.add_argument("--bands", help="band roles in file order, e.g. R,G,B,NIR")
        sp.add_argument("--detector", help="auto | spectral | graft | clip (default: auto)")
        sp.add_argument("--planner", help="auto | rules | llm (default: auto)")
        sp.add_argument("--json", action="store_true", help="print one JSON object per answer")
        sp.add_argument("--geometry", action="store_true", help="with --json: add region polygons")
        sp.add_argument("--small-max-m2", type=float, help="size word threshold (default 100)")
        sp.add_argument("--large-min-m2", type=float, help="size word threshold (default 500)")
        sp.add_argument("--timeout", type=float, help="sandbox wall-clock limit per program (s)")

    ask = sub.add_parser("ask", help="answer questions about an image")
    image_args(ask)
    ask.add_argument("question", nargs="?", help="the question (or use --questions-file)")
    ask.add_argument("--questions-file", type=Path, help="one question per line")

    run = sub.add_parser("run", help="run hand-written programs through the sandbox")
    image_args(run)
    run.add_argument("programs", nargs="+", type=Path, help="files defining execute_command(image)")

    tl = sub.add_parser("tools", help="print the tool table (Markdown)")
    tl.add_argument("--update-readme", action="store_true", help="rewrite README.md's tool table")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "tools":
            import tools
            from viper_rs.docs import update_readme

            if args.update_readme:
                readme = Path(__file__).resolve().parents[1] / "README.md"
                changed = update_readme(readme, tools.REGISTRY)
                print(f"{readme}: {'updated' if changed else 'already up to date'}")
            else:
                print(tools.REGISTRY.docs_table())
            return 0
        return _run_image_command(args)
    except ViperError as exc:
        print(f"viper-rs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("viper-rs: interrupted", file=sys.stderr)
        return 130


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        detector=args.detector,
        planner=args.planner,
        small_max_m2=args.small_max_m2,
        large_min_m2=args.large_min_m2,
        sandbox_wall_s=args.timeout,
    )


def _run_image_command(args: argparse.Namespace) -> int:
    from viper_rs.agent import Agent
    from viper_rs.geo import GeoImage

    if args.command == "ask":
        if args.question is None and args.questions_file is None:
            raise ImageError("give a QUESTION or --questions-file FILE")
        questions = [args.question] if args.question is not None else _read_questions(args.questions_file)
    else:
        programs = [(p, _read_text(p, "program")) for p in args.programs]
    settings = _settings(args)
    image = GeoImage.open(args.image, gsd=args.gsd, bands=args.bands)
    failed = 0
    with Agent(settings) as agent:
        if args.command == "ask":
            for q in questions:
                answer = agent.ask(image, q)
                failed += answer.error is not None
                _emit(answer, args)
        else:
            for path, source in programs:
                answer = agent.run_program(image, source, question=None)
                answer.question = str(path)
                failed += answer.error is not None
                _emit(answer, args)
    return 1 if failed else 0


def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        raise ImageError(f"{path}: no such {what} file")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ImageError(f"{path}: cannot read {what} file ({exc})") from None
    if not text.strip():
        raise ImageError(f"{path}: {what} file is empty")
    return text


def _read_questions(path: Path) -> list[str]:
    lines = _read_text(path, "questions").splitlines()
    qs = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not qs:
        raise ImageError(f"{path}: no questions in file")
    return qs


def _emit(answer: Any, args: argparse.Namespace) -> None:
    if args.json:
        print(answer.to_json(geometry=args.geometry), flush=True)
        return
    print(f"Q: {answer.question}")
    print(f"A: {answer.answer}")
    if answer.error:
        print(f"   error ({answer.error['type']}): {answer.error['message']}")
    if answer.program:
        print("   program:")
        for line in answer.program.rstrip().splitlines():
            print(f"     {line}")
    labels: dict[str, int] = {}
    for r in answer.regions:
        labels[r.label] = labels.get(r.label, 0) + 1
    if labels:
        print("   regions: " + ", ".join(f"{n} {k}" for k, n in sorted(labels.items())))
    for note in answer.notes:
        print(f"   note: {note}")
    print(f"   detector: {answer.detector}, planner: {answer.planner}, "
          f"{answer.timings.get('total_ms', 0):.0f} ms", flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
