"""Command line: ``python -m viper_rs ask|run|tools``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from viper_rs.config import Settings
from viper_rs.errors import InputError, ViperError

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

    demo = sub.add_parser("demo", help="answer questions about the built-in synthetic scene")
    demo.add_argument("--seed", type=int, default=0, help="scene seed")
    demo.add_argument("--n", type=int, default=10, help="number of questions")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="where the scene is written")
    demo.add_argument("--detector", help="auto | spectral | oracle (ground truth masks)")
    demo.add_argument("--json", action="store_true", help="one JSON object per answer")
    demo.add_argument("--geometry", action="store_true", help=argparse.SUPPRESS)

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
        if args.command == "demo":
            return _demo(args)
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
            raise InputError("give a QUESTION or --questions-file FILE")
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


def _demo(args: argparse.Namespace) -> int:
    """Write a synthetic scene as a GeoTIFF, read it back and answer RSVQA-style questions."""
    from viper_rs.agent import Agent
    from viper_rs.geo import GeoImage, write_geotiff
    from viper_rs.synthetic import make_questions, make_scene

    scene = make_scene(seed=args.seed)
    tif = write_geotiff(scene.image, args.out / "scene.tif")
    (args.out / "truth.geojson").write_text(json.dumps(scene.to_geojson()))
    image = GeoImage.open(tif)
    settings = Settings.from_env()
    detector: Any = args.detector or settings.detector
    if detector == "oracle":
        from viper_rs.vision.oracle import OracleDetector

        detector = OracleDetector(scene, settings)
        image = scene.image
    questions = make_questions(scene, n=args.n, seed=args.seed, settings=settings)
    if not args.json:
        print(f"scene: {tif} ({image.width}x{image.height} px, {image.ground_sampling_distance:.2f} m, "
              f"{len(scene.objects)} objects; ground truth in {args.out / 'truth.geojson'})\n")
    right = 0
    with Agent(settings, detector=detector) as agent:
        for q in questions:
            answer = agent.ask(image, q.question)
            ok = _matches(answer, q)
            right += ok
            if args.json:
                d = answer.to_dict()
                d["truth"] = q.answer
                d["correct"] = ok
                print(json.dumps(d, default=str), flush=True)
            else:
                _emit(answer, args)
                print(f"   truth: {q.answer} -> {'right' if ok else 'wrong'}\n", flush=True)
    if not args.json:
        name = getattr(agent.detector, "name", "?")
        print(f"{right}/{len(questions)} right with the {name} detector")
        if name != "oracle":
            print("(--detector oracle answers from the ground-truth masks: it checks planner, "
                  "tools and sandbox independent of vision quality)")
    return 0


def _matches(answer: Any, q: Any) -> bool:
    if answer.error or answer.value is None:
        return False
    if isinstance(q.value, float):
        return abs(float(answer.value) - q.value) <= max(1.0, 0.1 * abs(q.value))
    return answer.value == q.value


def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot read {what} file ({exc})") from None
    if not text.strip():
        raise InputError(f"{path}: {what} file is empty")
    return text


def _read_questions(path: Path) -> list[str]:
    lines = _read_text(path, "questions").splitlines()
    qs = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not qs:
        raise InputError(f"{path}: no questions in file")
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
