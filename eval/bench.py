"""``python -m eval.bench [--json]``: real-size model timings on the CPU (or CUDA).

Builds the GRAFT detector with real-size models (ViT-B/16 GRAFT image tower, CLIP
ViT-B/16 text tower, SAM ViT-B): the configured checkpoints when there are any, else
checkpoints with random weights written to a temporary folder and loaded through the
same loaders a user's weights go through. Prints per-stage times (image tower per
window, text encode, SAM image embedding, SAM decode per region, components) and, on one
500 x 500 px image with 20 different questions, the first (cold) question's time and
the median of the others, which reuse the per-image features, SAM embedding and text
embeddings. Random weights give meaningless answers; the timings are what counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from viper_rs.core.config import Settings


def random_checkpoints(folder: Path) -> dict[str, Path]:
    """Write GRAFT, CLIP and SAM ViT-B checkpoints with random weights; return their paths."""
    import open_clip
    from segment_anything import sam_model_registry

    from viper_rs.vision.build import save_graft_checkpoint
    from viper_rs.vision.modeling.graft import GraftPixelModel

    torch.manual_seed(0)
    paths = {"graft": folder / "graft_random.ckpt", "clip": folder / "clip_random.pt",
             "sam": folder / "sam_vit_b_random.pth"}
    save_graft_checkpoint(GraftPixelModel(), paths["graft"])
    clip = open_clip.create_model("ViT-B-16-quickgelu")
    torch.save(clip.state_dict(), paths["clip"])
    del clip
    sam = sam_model_registry["vit_b"]()
    torch.save(sam.state_dict(), paths["sam"])
    del sam
    return paths


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 1)


def stage_times(det: Any, image: Any, reps: int = 3) -> dict[str, float]:
    """Per-stage times (ms) measured directly on ``image`` (not the questions' image)."""
    from viper_rs.vision.base import ScoreMap
    from viper_rs.vision.components import label_components, regions_from_labels
    from viper_rs.vision.dense import component_points

    out: dict[str, float] = {}
    enc = det.embedder.encoder
    x = torch.randn(1, 3, enc.window, enc.window, device=enc_device(enc))
    with torch.inference_mode():
        enc.encode(x)  # warm-up
        out["image_tower_per_window_ms"] = _median_ms(lambda: enc.encode(x), reps)
    counter = iter(range(10**6))
    out["text_encode_ms"] = _median_ms(
        lambda: det.text.encode([f"bench query number {next(counter)}"]), reps)
    if det.sam is not None:
        t0 = time.perf_counter()
        det.sam.set_image(image)
        out["sam_image_embedding_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    grid = det.embedder.embed(image)
    rng = np.random.default_rng(0)
    probs = rng.random(grid.features.shape[:2]).astype(np.float32)
    scores = grid.upsample(probs)
    labels = label_components(scores > 0.8, det.settings.connectivity)

    def components() -> None:
        lab = label_components(scores > 0.8, det.settings.connectivity)
        regions_from_labels(image, lab, ScoreMap(scores, 0.8, "x", "x", "bench"))

    out["components_ms"] = _median_ms(components, reps)
    out["components_n"] = int(labels.max())
    if det.sam is not None and labels.max():
        keep = np.isin(labels, np.arange(1, min(int(labels.max()), 16) + 1))
        labels = np.where(keep, labels, 0)
        points = component_points(labels, probs, grid.patch_centres(), scores, 3)
        t0 = time.perf_counter()
        _, stats = det.sam.refine(image, labels, points, scores)
        n = max(1, int(stats.get("regions", len(points))))
        out["sam_decode_per_region_ms"] = round((time.perf_counter() - t0) * 1000 / n, 1)
    return out


def enc_device(enc: Any) -> torch.device:
    """Device of a torch module's parameters (CPU when it has none)."""
    try:
        return next(enc.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def run(settings: Settings | None = None, n_questions: int = 20, size: int = 500,
        progress: bool = True) -> dict[str, Any]:
    """Build the detector, time the stages and a question session; return the figures."""
    from viper_rs.agent import Agent
    from viper_rs.synthetic import make_questions, make_scene
    from viper_rs.vision.factory import build_dense_detector

    settings = settings or Settings.from_env()
    tmp = tempfile.TemporaryDirectory(prefix="viper-rs-bench-")
    weights = "configured"
    if settings.graft_checkpoint is None:
        weights = "random (no checkpoints configured)"
        paths = random_checkpoints(Path(tmp.name))
        settings = settings.model_copy(update={
            "graft_checkpoint": paths["graft"], "clip_checkpoint": paths["clip"],
            "sam_checkpoint": settings.sam_checkpoint or paths["sam"],
        })
    settings = settings.model_copy(update={"cache_dir": Path(tmp.name) / "cache"})
    t0 = time.perf_counter()
    det = build_dense_detector("graft", settings)
    load_s = time.perf_counter() - t0

    stage_scene = make_scene(seed=1, size=size)
    stages = stage_times(det, stage_scene.image)

    scene = make_scene(seed=0, size=size)
    questions = [q.question for q in make_questions(scene, n=n_questions, seed=0)]
    times: list[float] = []
    errors = 0
    regions = 0
    with Agent(settings, detector=det, planner="rules") as agent:
        for i, q in enumerate(questions):
            t = time.perf_counter()
            ans = agent.ask(scene.image, q)
            times.append(time.perf_counter() - t)
            errors += ans.error is not None
            regions += len(ans.regions)
            if progress:
                print(f"  [{i + 1:2d}/{len(questions)}] {times[-1]:7.3f} s  {q}",
                      file=sys.stderr, flush=True)
    tmp.cleanup()
    first = times[0]
    cached = statistics.median(times[1:]) if len(times) > 1 else float("nan")
    return {
        "first_question_s": round(first, 3),
        "cached_question_s": round(cached, 4),
        "cached_over_first": round(cached / first, 4),
        "goal_cached_le_5pct": cached <= 0.05 * first,
        "questions": len(questions),
        "errors": errors,
        "regions_total": regions,
        "model_load_s": round(load_s, 2),
        "stages_ms": stages,
        "image_px": [size, size],
        "weights": weights,
        "device": str(enc_device(det.embedder.encoder)),
        "torch_threads": torch.get_num_threads(),
        "sam": det.sam is not None,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--n", type=int, default=20, help="questions (default 20)")
    p.add_argument("--size", type=int, default=500, help="image size in px (default 500)")
    p.add_argument("--quiet", action="store_true", help="no per-question lines on stderr")
    args = p.parse_args(argv)
    out = run(n_questions=args.n, size=args.size, progress=not args.quiet)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"weights: {out['weights']}; device {out['device']}, {out['torch_threads']} threads; "
          f"models loaded in {out['model_load_s']} s")
    for k, v in out["stages_ms"].items():
        print(f"  {k:28s} {v}")
    print(f"first question (cold):      {out['first_question_s']:.3f} s")
    print(f"cached question (median):   {out['cached_question_s']:.4f} s "
          f"({100 * out['cached_over_first']:.1f}% of first; goal <= 5%)")
    print(f"{out['questions']} questions, {out['errors']} errors, {out['regions_total']} regions")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
