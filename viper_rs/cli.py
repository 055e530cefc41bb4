"""Command line: ``python -m viper_rs ask|run|demo|prompt|tools|weights|embed|index``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viper_rs.core.config import Settings
from viper_rs.core.errors import ImageError, ImageTooLarge, InputError, NoGroundSize, ViperError
from viper_rs.core.overrides import (
    IMAGE_FIELDS,
    LLM_FIELDS,
    MODEL_FIELDS,
    add_flags,
    args_overrides,
)
from viper_rs.core.textsafe import configure_logging, cut, safe_lines, safe_text, safe_traceback

if TYPE_CHECKING:
    from viper_rs.core.detector import Detector

log = logging.getLogger("viper_rs")
MAX_LABELS_SHOWN = 20  # distinct region labels listed on a text answer's "regions:" line


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (all subcommands)."""
    p = argparse.ArgumentParser(prog="python -m viper_rs", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True)

    def image_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("image", help="GeoTIFF/COG, PNG or JPEG")
        sp.add_argument("--gsd", type=float, help="metres per pixel for images without a CRS")
        sp.add_argument("--bands", help="band roles in file order, e.g. R,G,B,NIR")
        add_flags(sp, ("detector", "planner"))
        sp.add_argument("--json", action="store_true", help="print one JSON object per answer")
        sp.add_argument("--geometry", action="store_true", help="with --json: add region polygons")
        add_flags(sp, ("small_max_m2", "large_min_m2", "sandbox_wall_s", "image_max_memory_mb",
                       "image_max_time_s"))
        llm_args(sp)
        model_args(sp)

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

    pr = sub.add_parser("prompt", help="print the exact LLM prompt for a question, its hash and size")
    pr.add_argument("question", nargs="?", default="", help="the question (default: none)")
    pr.add_argument("--json", action="store_true", help="print the chat messages, hash and size as JSON")

    tl = sub.add_parser("tools", help="print the tool table (Markdown)")
    tl.add_argument("--update-docs", action="store_true", help="rewrite docs/tools.md's tool table")

    wt = sub.add_parser("weights", help="show the model weights found; download CLIP / SAM")
    wt.add_argument("--download", nargs="?", const="all", choices=["clip", "sam", "all", "graft"],
                    help="download into <cache-dir>/weights (clip, sam or all; default all)")
    add_flags(wt, ("cache_dir", "graft_checkpoint", "clip_checkpoint", "clip_model",
                   "clip_pretrained", "sam_checkpoint"), help={
        "cache_dir": "cache folder (weights go to its weights/)",
        "graft_checkpoint": "GRAFT pixel-level checkpoint to check",
        "clip_checkpoint": "CLIP checkpoint to check",
        "clip_pretrained": "open_clip pretrained tag (online only)",
        "sam_checkpoint": "segment-anything checkpoint to check",
    })
    wt.add_argument("--json", action="store_true", help="print one JSON object")

    em = sub.add_parser("embed", help="write an image's patch-embedding grid (rows x cols x D .npy)")
    em.add_argument("image", help="GeoTIFF/COG, PNG or JPEG")
    em.add_argument("--gsd", type=float, help="metres per pixel for images without a CRS")
    em.add_argument("--bands", help="band roles in file order, e.g. R,G,B,NIR")
    em.add_argument("--detector", choices=["graft", "clip"], default="graft",
                    help="image tower: graft (pixel-level GRAFT) or clip (dense CLIP); default graft")
    add_flags(em, ("graft_checkpoint", "clip_checkpoint", "clip_model", "clip_pretrained",
                   "device", "cache_dir", "disk_cache"), help={
        "clip_checkpoint": "CLIP checkpoint (for --detector clip)",
        "cache_dir": "where features are cached",
        "disk_cache": "do not read or write the disk cache",
    })
    add_flags(em, ("image_max_memory_mb", "image_max_time_s"))
    em.add_argument("--out", type=Path, required=True, help="output .npy file (float32)")

    from viper_rs.index.cli import add_parser as add_index_parser

    add_index_parser(sub, model_args)
    from viper_rs.region.cli import add_parser as add_region_parser

    add_region_parser(sub, model_args, llm_args)
    from viper_rs.vision.buildings.train import add_parser as add_train_buildings_parser

    add_train_buildings_parser(sub)
    return p


def llm_args(sp: argparse.ArgumentParser) -> None:
    """Flags of the LLM planner (any OpenAI-compatible endpoint)."""
    g = sp.add_argument_group("LLM planner (--planner llm, or auto for questions outside the grammar)")
    add_flags(g, LLM_FIELDS)


def llm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings overrides from the LLM flags (None = keep the default/env value)."""
    return args_overrides(args, LLM_FIELDS)


def model_args(sp: argparse.ArgumentParser) -> None:
    """Flags for model weights, device, calibration, SAM and caches (graft/clip detectors)."""
    g = sp.add_argument_group("models (graft / clip detectors)")
    add_flags(g, MODEL_FIELDS)


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings overrides from the model flags (None = keep the default/env value)."""
    return args_overrides(args, MODEL_FIELDS)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    configure_logging(level)
    try:
        if args.command == "tools":
            from viper_rs import tools
            from viper_rs.agent.docs import TOOLS_DOC, update_tools_doc

            if args.update_docs:
                changed = update_tools_doc(TOOLS_DOC, tools.REGISTRY)
                print(f"{TOOLS_DOC}: {'updated' if changed else 'already up to date'}")
            else:
                print(tools.REGISTRY.docs_table())
            return 0
        if args.command == "prompt":
            return _prompt(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "weights":
            return _weights(args)
        if args.command == "embed":
            return _embed(args)
        if args.command == "index":
            from viper_rs.index.cli import run as run_index

            return run_index(args, Settings.from_env(**model_settings(args)))
        if args.command == "region":
            from viper_rs.region.cli import run as run_region

            return run_region(args, _settings(args))
        if args.command == "train-buildings":
            from viper_rs.vision.buildings.train import run as run_train_buildings

            return run_train_buildings(args)
        return _run_image_command(args)
    except ViperError as exc:
        _error_line(f"viper-rs: error: {_exc_text(exc)}")
        return 2
    except MemoryError:
        print(f"viper-rs: error: {safe_text(_out_of_memory(args), 600)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("viper-rs: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - printed as Python would, its lines made safe
        _error_line(safe_traceback(exc), one_line=False)
        return 1


#: Longest error line printed (characters; the rest is cut with a marker).
MAX_ERROR_CHARS = 4000


def _error_line(text: str, one_line: bool = True) -> None:
    """Write ``text`` to stderr made safe for the terminal (:mod:`viper_rs.core.textsafe`): one
    line (a file name's own line break is escaped) unless ``one_line`` is False (a
    traceback, each line made safe already)."""
    enc = getattr(sys.stderr, "encoding", None) or "ascii"
    line = (safe_text(text, MAX_ERROR_CHARS, encoding=enc) if one_line
            else safe_lines(text, encoding=enc))
    try:
        print(line, file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001, S110 - stderr itself is unusable: the exit code stands
        pass


def _out_of_memory(args: argparse.Namespace) -> str:
    """The one line said when an allocation failed: what was too large and the ways out."""
    from viper_rs.core.admission import ways_out

    image = getattr(args, "image", None)
    what = f"{image}: " if isinstance(image, str) else ""
    if args.command in ("ask", "run"):
        return (f"{what}out of memory while answering about the image; {ways_out(None)}; a "
                "lower --image-max-memory-mb refuses such images before reading them")
    return (f"{what}out of memory in '{args.command}'; ask about a smaller image or area, "
            "or free memory on the machine")


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of ``ask`` and ``run``: defaults, ``VIPER_RS_*`` variables, flags."""
    return Settings.from_env(**args_overrides(args, IMAGE_FIELDS + LLM_FIELDS + MODEL_FIELDS))


def _prompt(args: argparse.Namespace) -> int:
    """Print the exact messages a first LLM request for the question sends, with hash and size."""
    from viper_rs.planning.prompting import Prompt

    prompt = Prompt()
    messages = prompt.messages(args.question)
    info = prompt.info
    if args.json:
        print(json.dumps({**info.to_dict(), "messages": messages}, indent=2))
        return 0
    for m in messages:
        print(f"===== {m['role']} =====\n{safe_lines(m['content'])}\n")  # the question's own
    print(f"prompt {info.hash}: system message {info.chars} characters (~{info.approx_tokens} "
          "tokens at 4 characters per token)", file=sys.stderr)
    return 0


def _weights(args: argparse.Namespace) -> int:
    """Show the configured / cached model weights and what ``auto`` picks; download on request."""
    from viper_rs.core import weights as wts

    settings = Settings.from_env(**model_settings(args))
    downloaded: list[str] = []
    if args.download:
        names = ["clip", "sam"] if args.download == "all" else [args.download]
        for name in names:
            if not args.json:
                print(f"{name}: downloading {wts.download_url(name)}", flush=True)
            path = wts.download(name, wts.weights_dir(settings), progress=True)
            downloaded.append(str(path))
            if not args.json:
                print(f"{name}: {path} (sha256 verified)", flush=True)
    found = wts.find_weights(settings)
    detector = wts.auto_detector(settings)
    if args.json:
        print(json.dumps({
            "cache_dir": str(settings.cache_dir), "weights_dir": str(wts.weights_dir(settings)),
            "models": found, "auto": detector, "auto_reason": wts.auto_reason(settings),
            "downloaded": downloaded,
        }, indent=2))
        return 0
    rows = [("model", "role", "status", "path")]
    for entry in found.values():
        where = entry["path"] or entry["configured"] or "-"
        if entry["source"] == "pretrained":
            where = f"open_clip tag {settings.clip_pretrained!r}"
        size = f" ({entry['size'] / 2**20:.0f} MiB)" if entry["size"] else ""
        src = f" [{entry['source']}]" if entry["source"] in ("cache", "configured") else ""
        rows.append((entry["model"], entry["role"], entry["status"],
                     safe_text(where + size + src)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    print(f"\nweights folder: {safe_text(wts.weights_dir(settings))}")
    for name, entry in found.items():
        if entry["note"]:
            print(f"{name}: {safe_text(entry['note'])}")
    print(f"\ndetector: {safe_text(wts.auto_reason(settings))}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    """Embed one image with the GRAFT or dense-CLIP image tower and save the patch grid."""
    import numpy as np

    from viper_rs.core.admission import admission
    from viper_rs.core.geo import GeoImage
    from viper_rs.core.weights import resolve_settings
    from viper_rs.vision.build import load_image_tower, resolve_device
    from viper_rs.vision.cache import FeatureCache
    from viper_rs.vision.cost import image_admission
    from viper_rs.vision.embedder import Embedder

    out: Path = args.out
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory; give a .npy file name")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    settings = resolve_settings(Settings.from_env(
        **model_settings(args), **args_overrides(args, ("image_max_memory_mb", "image_max_time_s"))))
    budget = settings.model_copy(update={"detector": args.detector})
    with admission(image_admission(budget, args.gsd)):
        # the IMAGE argument is typed by the user: a URL there may be read (viper_rs.core.rasterfile)
        image = GeoImage.open(args.image, gsd=args.gsd, bands=args.bands, remote=True)
    device = resolve_device(settings.device)
    encoder = load_image_tower(args.detector, settings, device)
    disk = settings.cache_dir / "features" if settings.disk_cache else None
    embedder = Embedder(encoder, settings, FeatureCache(disk, settings.memory_cache_items))
    grid = embedder.embed(image)
    try:
        with open(out, "wb") as fh:
            np.save(fh, np.ascontiguousarray(grid.features, dtype=np.float32))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    st = embedder.last_stats
    rows, cols, dim = grid.features.shape
    scale = f", resampled x{grid.scale:.3g}" if st["resampled"] else ""
    print(safe_text(
        f"{out}: {rows}x{cols}x{dim} float32 from {image.name} ({image.width}x{image.height} px"
        f"{scale}), {st['windows']} window(s), {st['ms']:.0f} ms"
        f"{' (cached)' if st['cached'] else ''}, {args.detector} {encoder.model_id} on {device}"))
    return 0


def _run_image_command(args: argparse.Namespace) -> int:
    from viper_rs.agent import Agent
    from viper_rs.core.admission import admission
    from viper_rs.core.geo import GeoImage
    from viper_rs.vision.cost import image_admission
    from viper_rs.vision.factory import image_problem

    if args.command == "ask":
        if args.question is None and args.questions_file is None:
            raise InputError("give a QUESTION or --questions-file FILE")
        questions = [args.question] if args.question is not None else _read_questions(args.questions_file)
    else:
        programs = [(p, _read_text(p, "program")) for p in args.programs]
    settings = _settings(args)
    with admission(image_admission(settings, args.gsd)):
        # the IMAGE argument is typed by the user: a URL there may be read (viper_rs.core.rasterfile)
        image = GeoImage.open(args.image, gsd=args.gsd, bands=args.bands, remote=True)
    # Bands the detector cannot read are bad input, like an unreadable file (exit 2).
    problem = image_problem(image, settings.detector, settings)
    if problem:
        raise ImageError(problem)
    failed = refused = 0
    with Agent(settings) as agent:
        if args.command == "ask":
            for q in questions:
                answer = agent.ask(image, q)
                printed = _emit_answer(answer, args, f"question {q!r}")
                failed += answer.error is not None or not printed
                refused += _refused(answer)
        else:
            for path, source in programs:
                answer = agent.run_program(image, source, question=None)
                answer.question = str(path)
                printed = _emit_answer(answer, args, f"program {path}")
                failed += answer.error is not None or not printed
                refused += _refused(answer)
    return 2 if refused else 1 if failed else 0


def _emit_answer(answer: Any, args: argparse.Namespace, what: str) -> bool:
    """Print one answer (:func:`_emit_safely`); a question refused for want of a ground
    size is one ``viper-rs: error:`` line on stderr instead (and its JSON answer with
    --json)."""
    error = answer.error if isinstance(answer.error, dict) else {}
    if error.get("type") != NoGroundSize.type:
        return _emit_safely(answer, args, what)
    _error_line(f"viper-rs: error: {error.get('message', '')}")
    return _emit_safely(answer, args, what) if args.json else True


def _refused(answer: Any) -> bool:
    """Whether ``answer`` failed on bad input (exit 2 like a refused image): the image was
    too large (an allocation failed) or has no ground size for a question in metres."""
    error = answer.error if isinstance(answer.error, dict) else {}
    return error.get("type") in (ImageTooLarge.type, NoGroundSize.type)


def _demo(args: argparse.Namespace) -> int:
    """Write a synthetic scene as a GeoTIFF, read it back and answer RSVQA-style questions."""
    from viper_rs.agent import Agent
    from viper_rs.core.geo import GeoImage
    from viper_rs.core.raster_write import write_geotiff
    from viper_rs.synthetic import make_questions, make_scene

    scene = make_scene(seed=args.seed)
    tif = write_geotiff(scene.image, args.out / "scene.tif")
    (args.out / "truth.geojson").write_text(json.dumps(scene.to_geojson()))
    image = GeoImage.open(tif)
    settings = Settings.from_env()
    detector: str | Detector = args.detector or settings.detector
    if detector == "oracle":
        from viper_rs.vision.oracle import OracleDetector

        detector = OracleDetector(scene, settings)
        image = scene.image
    questions = make_questions(scene, n=args.n, seed=args.seed, settings=settings)
    if not args.json:
        print(safe_text(f"scene: {tif} ({image.width}x{image.height} px, "
                        f"{image.ground_sampling_distance:.2f} m, {len(scene.objects)} objects; "
                        f"ground truth in {args.out / 'truth.geojson'})") + "\n")
    right = unprinted = 0
    with Agent(settings, detector=detector) as agent:
        for q in questions:
            answer = agent.ask(image, q.question)
            ok = _matches(answer, q)
            right += ok
            extra = {"truth": q.answer, "correct": ok}
            if not _emit_safely(answer, args, f"question {q.question!r}", extra):
                unprinted += 1
    if not args.json:
        name = agent.detector.name
        print(f"{right}/{len(questions)} right with the {name} detector")
        if name != "oracle":
            print("(--detector oracle answers from the ground-truth masks: it checks planner, "
                  "tools and sandbox independent of vision quality)")
    return 1 if unprinted else 0


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


def _emit_safely(
    answer: Any, args: argparse.Namespace, what: str, extra: dict[str, Any] | None = None
) -> bool:
    """Print one answer (:func:`_emit`); False when that failed, after one error line on
    stderr naming ``what`` (and, with --json, a small JSON error object in its place)."""
    try:
        _emit(answer, args, extra)
        return True
    except Exception as exc:  # noqa: BLE001 - MemoryError included: the next answers still print
        try:
            reason = f"{type(exc).__name__}: {cut(_exc_text(exc), 300)}"
        except Exception:  # noqa: BLE001 - e.g. MemoryError again: the type name will do
            reason = type(exc).__name__
    enc = getattr(sys.stderr, "encoding", None) or "ascii"
    try:
        print(f"viper-rs: error: could not print the answer to {safe_text(what, 200, encoding=enc)}"
              f" ({safe_text(reason, 300, encoding=enc)})", file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001, S110 - stderr itself is unusable: nothing more to do
        pass
    if getattr(args, "json", False):
        try:
            from viper_rs.core.answer import Answer

            failed = Answer(
                question=cut(str(answer.question), 200) if answer.question is not None else None,
                answer="Could not print the answer", value=None, kind="other",
                error={"type": "output", "message": cut(f"could not print the answer ({reason})", 300)},
            )
            print(failed.to_json(extra=extra), flush=True)
        except Exception:  # noqa: BLE001, S110 - stdout is unusable: the stderr line stands
            pass
    return False


def _exc_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - an exception whose str() fails
        return "<unprintable message>"


def _emit(answer: Any, args: argparse.Namespace, extra: dict[str, Any] | None = None) -> None:
    """Print one answer: strict JSON with --json, else text in which every program-controlled
    string is made safe for the terminal (:func:`viper_rs.core.textsafe.safe_text`)."""
    if args.json:
        print(answer.to_json(geometry=args.geometry, extra=extra), flush=True)
        return
    from viper_rs.core.answer_json import (
        MAX_ATTEMPTS_LISTED,
        MAX_NOTES,
        MAX_PROGRAM_CHARS,
        MAX_TEXT_CHARS,
    )

    enc = getattr(sys.stdout, "encoding", None) or "ascii"

    def t(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
        return safe_text(text, limit, encoding=enc)

    from viper_rs.core.wording import readable

    lines = [f"Q: {t(answer.question)}", f"A: {t(readable(answer))}"]
    if answer.error:
        err = answer.error if isinstance(answer.error, dict) else {"message": answer.error}
        lines.append(f"   error ({t(err.get('type'), 100)}): {t(err.get('message'))}")
    if answer.program:
        lines.append("   program:")
        for line in cut(str(answer.program), MAX_PROGRAM_CHARS).rstrip().splitlines():
            lines.append(f"     {t(line)}")
    labels: dict[str, int] = {}
    for r in answer.regions:
        labels[r.label] = labels.get(r.label, 0) + 1
    if labels:
        shown = sorted(labels.items(), key=lambda kv: str(kv[0]))[:MAX_LABELS_SHOWN]
        more = f", and {len(labels) - len(shown):,} more labels" if len(labels) > len(shown) else ""
        lines.append("   regions: " + ", ".join(f"{n} {t(k, 80)}" for k, n in shown) + more)
    for note in answer.notes[:MAX_NOTES]:
        lines.append(f"   note: {t(note)}")
    if len(answer.notes) > MAX_NOTES:
        lines.append(f"   note: {MAX_NOTES} of {len(answer.notes)} notes shown")
    if len(answer.attempts) > 1:
        for a in answer.attempts[:MAX_ATTEMPTS_LISTED]:
            err = a.get("error")
            outcome = (f"{t(err.get('type'), 40)}: {t(err.get('message'), 200)}"
                       if isinstance(err, dict) else "ok")
            lines.append(f"   attempt {t(a.get('attempt'), 10)} ({t(a.get('planner'), 40)}"
                         f"{', cached' if a.get('cached') else ''}): {outcome}")
    cached = " (cached program)" if answer.attempts and answer.attempts[-1].get("cached") else ""
    total = answer.timings.get("total_ms", 0) if isinstance(answer.timings, dict) else 0
    ms = f"{total:.0f}" if isinstance(total, int | float) else t(total, 20)
    lines.append(f"   detector: {t(answer.detector, 100)}, planner: {t(answer.planner, 100)}{cached}, "
                 f"{ms} ms")
    if extra is not None and "truth" in extra:
        lines.append(f"   truth: {t(extra['truth'], 200)} -> "
                     f"{'right' if extra.get('correct') else 'wrong'}\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
