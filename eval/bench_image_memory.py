"""``python -m eval.bench_image_memory``: peak memory and time of one-image questions.

``python -m eval.bench_image_memory [--mpx 2,8,16] [--formats tif,png] [--gsd 0.3]
[--questions count,area] [--detector auto] [--out DIR] [--json OUT]``

Each run is ``python -m viper_rs ask IMAGE QUESTION --json`` in a fresh process under
``/usr/bin/time -v`` (its peak resident set size: the main process, which decodes the
image and runs the detector; sandbox workers are smaller; and its CPU time) on a
generated uint8 RGB image: synthetic scenes (:func:`viper_rs.synthetic.make_scene`, 1024
px, flipped so that tiles differ) tiled to about ``MPX`` million pixels (and 0.25 Mpx),
written as a deflate GeoTIFF in UTM at ``--gsd`` m/px and as a PNG read with ``--gsd``.
Printed per run: pixels, peak RSS, wall and CPU seconds, and the single-image estimate
(:func:`viper_rs.vision.cost.estimate_image`) next to the measurement; then per format and
question the bytes per pixel and CPU seconds per Mpx (least-squares slope over the sizes):
the constants of :mod:`viper_rs.vision.cost`. The machine's load moves the wall times.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

QUESTIONS = {
    "count": "How many buildings are there?",
    "area": "What is the area covered by water?",
}


def make_image(mpx: float, fmt: str, gsd: float, out: Path) -> Path:
    """A uint8 RGB image of about ``mpx`` million pixels made of synthetic scene tiles."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from viper_rs.synthetic import make_scene

    side = int(round(np.sqrt(mpx * 1e6)))
    path = out / f"bench_{mpx:g}mpx.{fmt}"
    if path.exists():
        return path
    tiles = [make_scene(seed, size=1024, gsd=max(0.1, gsd)).image.rgb_uint8() for seed in range(2)]
    data = np.empty((3, side, side), dtype=np.uint8)
    k = 0
    for r in range(0, side, 1024):
        for c in range(0, side, 1024):
            t = tiles[k % 2]
            t = t[::-1] if (k // 2) % 2 else t
            t = t[:, ::-1] if (k // 4) % 2 else t
            h, w = min(1024, side - r), min(1024, side - c)
            data[:, r : r + h, c : c + w] = np.moveaxis(t[:h, :w], -1, 0)
            k += 1
    profile: dict[str, Any] = {"width": side, "height": side, "count": 3, "dtype": "uint8"}
    if fmt == "tif":
        profile.update(driver="GTiff", crs=CRS.from_epsg(32614), compress="deflate",
                       transform=from_origin(500_000, 5_200_000, gsd, gsd), tiled=True)
    else:
        profile.update(driver="PNG")
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def measure(args: list[str]) -> dict[str, float]:
    """Peak RSS (bytes) and wall seconds of one command under ``/usr/bin/time -v``."""
    proc = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True,
                          check=False)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)",
                                           proc.stderr))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    secs = 0.0
    if wall:
        for part in wall.group(1).split(":"):
            secs = secs * 60 + float(part)
    answer = ""
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            answer = json.loads(line).get("answer", "")
    return {"rss": int(rss.group(1)) * 1024 if rss else 0, "s": secs, "cpu": cpu,
            "rc": proc.returncode,
            "answer": answer, "stderr": proc.stderr.split("\tCommand being timed")[0].strip()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per run, then bytes and CPU seconds per pixel
    (least squares over the sizes) per format and question."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mpx", default="2,8,16")
    p.add_argument("--formats", default="tif,png")
    p.add_argument("--questions", default="count,area")
    p.add_argument("--gsd", type=float, default=0.3)
    p.add_argument("--detector", default="auto")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "viper_bench_image")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "viper_rs", "ask", "--detector", a.detector, "--json",
          "--image-max-memory-mb", "1000000", "--image-max-time", "1000000"]
    rows = []
    sizes = [0.25, *(float(x) for x in a.mpx.split(","))]
    for fmt in a.formats.split(","):
        for q in a.questions.split(","):
            for mpx in sizes:
                img = make_image(mpx, fmt, a.gsd, a.out)
                extra = ["--gsd", str(a.gsd)] if fmt == "png" else []
                m = measure([*py, str(img), QUESTIONS[q], *extra])
                px = _pixels(img)
                est = _estimate(img, a.gsd if fmt == "png" else None, a.detector)
                row = {"mpx": px / 1e6, "format": fmt, "question": q, "peak_mb": m["rss"] / 1e6,
                       "wall_s": m["s"], "cpu_s": m["cpu"], "estimate_mb": est.memory_bytes / 1e6,
                       "estimate_s": est.seconds, "rc": m["rc"], "answer": m["answer"]}
                rows.append(row)
                print(f"{fmt:3} {q:5} {px / 1e6:5.2f} Mpx: peak {row['peak_mb']:6.0f} MB, "
                      f"{m['s']:6.1f} s wall, {m['cpu']:6.1f} s CPU; estimate "
                      f"{row['estimate_mb']:6.0f} MB ({row['peak_mb'] / row['estimate_mb']:.2f}x), "
                      f"{est.seconds:5.0f} s; exit {m['rc']}: {m['answer'][:30]!r}"
                      + (f" {m['stderr'][-200:]}" if m["rc"] else ""), flush=True)
            sel = [r for r in rows if r["format"] == fmt and r["question"] == q]
            x = np.array([r["mpx"] for r in sel])
            for key, unit in (("peak_mb", "bytes/px"), ("cpu_s", "CPU s/Mpx")):
                slope, icpt = np.polyfit(x, np.array([r[key] for r in sel]), 1)
                print(f"{fmt:3} {q:5}: {slope:6.1f} {unit} (intercept {icpt:.0f})", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


def _pixels(img: Path) -> int:
    import rasterio

    with rasterio.open(img) as ds:
        return ds.width * ds.height


def _estimate(img: Path, gsd: float | None, detector: str) -> Any:
    """The single-image estimate of ``img`` from its header (no pixel decoded)."""
    from viper_rs.core.admission import RasterHeader, admission
    from viper_rs.core.config import Settings
    from viper_rs.core.errors import ImageError
    from viper_rs.core.geo import GeoImage
    from viper_rs.vision.cost import estimate_image

    headers: list[RasterHeader] = []

    def stop(header: RasterHeader) -> None:
        headers.append(header)
        raise ImageError("header read")

    try:
        with admission(stop):
            GeoImage.open(img, gsd=gsd)
    except ImageError:
        pass
    return estimate_image(headers[0], Settings(detector=detector), gsd)


if __name__ == "__main__":
    sys.exit(main())
