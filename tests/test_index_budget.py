"""The index build's budget (issue 23): estimated before any chip is read; a source over it
on its own is skipped and listed, the rest indexed; a build over it refused (exit 2, one
line with the estimate, the budget and the ways out) unless the budget is raised."""

from __future__ import annotations

import json
from pathlib import Path

import hostile_corpus as hc
import pytest
from cli_peak import cli_peak

from viper_rs.index.chips import ChipGrid, plan
from viper_rs.tiling.sources import Source

#: The CLI's peak resident memory allowed while it skips a header-only 200k x 200k px file
#: (the interpreter, rasterio, LanceDB and the spectral detector take ~300 MB).
PEAK_MB = 600
TIMEOUT_S = 120


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """Run ``python -m viper_rs ARGV``: exit code, stdout, stderr and the CLI process's own
    peak resident memory (MB; measured from a small wrapper, see tests/cli_peak.py)."""
    rc, out, err, peak_mb = cli_peak(argv, env=env, timeout=TIMEOUT_S)
    assert rc is not None, f"killed after {TIMEOUT_S} s: {err[-800:]}"
    return rc, out, err, peak_mb


def _sparse(path: Path, dtype: str) -> Path:
    """A header-only GeoTIFF declaring 200,000 x 200,000 px (about 1 MB on disk)."""
    import rasterio
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", width=200_000, height=200_000, count=3,
                       dtype=dtype, crs="EPSG:32618", tiled=True, blockxsize=1024,
                       blockysize=1024, sparse_ok=True, BIGTIFF="YES",
                       transform=Affine(0.5, 0, 500_000, 0, -0.5, 4_500_000)):
        pass
    return path


def _build(sources: list[Path], out: Path, *flags: str) -> list[str]:
    return ["index", "build", *map(str, sources), "--out", str(out), "--embedder", "spectral",
            "--quiet", *flags]


def test_a_source_over_the_budget_is_skipped_and_the_rest_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    hc.sparse_tif_bomb(folder)  # the hostile corpus's uint8 file
    _sparse(folder / "sparse16.tif", "uint16")  # its white point is not from the pixels' 8 bits
    valid = hc.valid_tif(folder / "valid.tif", seed=1)
    # --no-attributes: BuildingNet (~1.1 GB with torch) would hide what the big files cost
    rc, out, err, peak_mb = _run(_build([folder], tmp_path / "index", "--json", "--no-attributes"))
    assert rc == 0, err[-2000:]
    report = json.loads(out)
    assert report["indexed"] >= 1 and report["sources"] == 1
    skipped = {Path(uri).name: why for uri, why in report["skipped_sources"]}
    assert set(skipped) == {"sparse200k.tif", "sparse16.tif"}, skipped
    for why in skipped.values():
        # the estimate (521 x 521 chips of 512 px at 0.5 m, 256 m chips), the budget, the ways out
        assert "200,000 x 200,000 px: 271,441 chips of 512 px" in why and "> 200,000" in why, why
        assert "crop it" in why and "--max-chips" in why, why
    assert valid.name not in skipped
    assert peak_mb < PEAK_MB, f"peak {peak_mb:.0f} MB"


def test_a_build_over_the_budget_is_refused_then_runs_when_raised(tmp_path: Path) -> None:
    tiles = [hc.valid_tif(tmp_path / f"t{i}.tif", seed=i) for i in range(3)]  # 1 chip each
    out = tmp_path / "index"
    rc, _, err, _ = _run(_build(tiles, out), env={"VIPER_RS_INDEX_MAX_CHIPS": "2"})
    assert rc == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("viper-rs: error:"), err
    line = lines[0]
    assert "over its budget (3 chips > 2)" in line and "3 chips to read" in line, line
    assert "--max-chips" in line and "VIPER_RS_INDEX_MAX_CHIPS" in line, line
    assert not out.exists(), "a refused build must write nothing"

    rc, stdout, err, _ = _run(_build(tiles, out, "--json", "--max-chips", "3"),
                              env={"VIPER_RS_INDEX_MAX_CHIPS": "2"})
    assert rc == 0, err[-2000:]
    assert json.loads(stdout)["indexed"] == 3


def test_the_time_budget_refuses_too(tmp_path: Path) -> None:
    tile = hc.valid_tif(tmp_path / "t.tif")
    rc, _, err, _ = _run(_build([tile], tmp_path / "index", "--chip-m", "64",
                                "--max-time-s", "0.01"))
    assert rc == 2, err[-2000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("viper-rs: error:")]
    assert len(errors) == 1 and "25 chips of 64 px" in errors[0], err
    assert "--max-time-s" in errors[0], errors[0]


@pytest.mark.parametrize(("width", "height", "res", "chip_m", "overlap"), [
    (256, 256, 1.0, 256.0, 0.25), (1000, 700, 1.0, 128.0, 0.25), (513, 1025, 0.5, 256.0, 0.0),
    (100, 5000, 5.0, 256.0, 0.5), (4097, 3001, 0.3, 100.0, 0.1),
])
def test_chip_count_is_the_plan_length(width: int, height: int, res: float, chip_m: float,
                                       overlap: float) -> None:
    source = Source(uri="/x/a.tif", width=width, height=height, count=3, crs="EPSG:32618",
                    transform=(res, 0.0, 500_000.0, 0.0, -res, 4_500_000.0), white_point=255.0,
                    fingerprint="f")
    from viper_rs.index.chips import chip_count

    grid = ChipGrid(chip_m, overlap)
    assert chip_count(source, grid) == len(plan(source, grid))
