"""Region sources benchmark: many tiny tiles and far-apart tiles (issue 23, point 4).

``python -m eval.bench_region_sources [--tiles 64] [--px 8] [--json OUT]`` writes, in a
temporary folder, a mosaic of ``tiles`` x ``tiles`` GeoTIFFs of ``px`` x ``px`` px (1 m,
one UTM zone) and two 64 px tiles 11,000 km apart on the equator, then runs
``python -m viper_rs region`` on each (spectral detector, rule planner, a water count) in
a fresh process and prints its wall time, peak resident memory, exit code and answer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from affine import Affine

QUESTION = "How many water areas are there?"


def _land(px: int, seed: int) -> np.ndarray:
    """(4, px, px) uint8 vegetation with a pond in the middle."""
    rng = np.random.default_rng(seed)
    img = np.empty((4, px, px), dtype=np.int16)
    img[:] = np.array([60, 100, 50, 200])[:, None, None]
    q = max(px // 4, 1)
    img[:, q:px - q, q:px - q] = np.array([20, 40, 50, 10])[:, None, None]
    img += rng.integers(-4, 5, img.shape).astype(np.int16)
    return img.clip(0, 255).astype(np.uint8)


def _write(path: Path, data: np.ndarray, crs: str, transform: Affine) -> None:
    from viper_rs.core.geo import GeoImage
    from viper_rs.core.raster_write import write_geotiff

    path.parent.mkdir(parents=True, exist_ok=True)
    write_geotiff(GeoImage.from_array(data, "R,G,B,NIR", crs=crs, transform=transform), path)


def tiny_mosaic(folder: Path, tiles: int, px: int) -> Path:
    """``tiles`` x ``tiles`` adjacent ``px`` px GeoTIFFs at 1 m in UTM 14N."""
    for i in range(tiles):
        for j in range(tiles):
            t = Affine(1.0, 0, 500_000.0 + j * px, 0, -1.0, 5_210_000.0 - i * px)
            _write(folder / f"t_{i:03d}_{j:03d}.tif", _land(px, i * tiles + j), "EPSG:32614", t)
    return folder


def far_apart(folder: Path) -> Path:
    """Two 64 px, 1 m tiles on the equator 11,000 km apart (lon -170 and -71)."""
    from rasterio.warp import transform as warp

    for k, lon in enumerate((-170.0, -71.0)):
        zone = int((lon + 180) // 6) + 1
        crs = f"EPSG:{32600 + zone}"
        xs, ys = warp("EPSG:4326", crs, [lon], [0.5])
        _write(folder / f"far_{k}.tif", _land(64, k), crs,
               Affine(1.0, 0, round(xs[0]), 0, -1.0, round(ys[0])))
    return folder


def run(sources: Path, timeout: float) -> dict:
    """One ``region`` run in a fresh process: wall s, peak RSS (MB), exit code, answer."""
    cmd = [sys.executable, "-m", "viper_rs", "region", str(sources), "-q", QUESTION,
           "--detector", "spectral", "--planner", "rules", "--no-progress", "--json"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True)
        end = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = None if time.monotonic() > end else os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        code, out, err = proc.returncode, fo.read(), fe.read()
        if code is None:
            err += f"\ntimed out after {timeout:.0f} s"
    peak = usage.ru_maxrss
    answer = None
    if out.strip():
        try:
            res = json.loads(out.strip().splitlines()[-1])
            answer = {"value": res.get("value"), "chips": len(res.get("chips", [])),
                      "share": res.get("coverage", {}).get("share")}
        except ValueError:
            pass
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 1024, 1), "code": code, "answer": answer,
            "stderr": err.strip().splitlines()[-1][:300] if err.strip() else ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=64, help="tiles per side (default 64)")
    ap.add_argument("--px", type=int, default=8, help="tile side in px (default 8)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        tiny = tiny_mosaic(root / "tiny", args.tiles, args.px)
        far = far_apart(root / "far")
        print(f"wrote {args.tiles ** 2} tiles of {args.px} px and 2 far-apart tiles in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        for name, folder in ((f"{args.tiles ** 2} tiles of {args.px} px", tiny),
                             ("2 tiles 11,000 km apart", far)):
            res = run(folder, args.timeout)
            out[name] = res
            print(f"{name}: {res['wall_s']} s, peak {res['peak_rss_mb']} MB, exit {res['code']}, "
                  f"answer {res['answer']} {res['stderr'] if res['code'] else ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
