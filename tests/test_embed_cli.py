"""``python -m viper_rs embed``: GRAFT patch embeddings of a 224 px image equal GRAFT's own
(Hugging Face) computation on every patch; CLIP dense embeddings; caching; clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from tests.conftest import REPO
from tests.graft_reference import (
    clip_input,
    cosines,
    reference,
    synthetic_rgb,
    tiny_clip,
    write_checkpoint,
    write_torchscript,
)
from viper_rs import cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No configured weights; caches in the test's folder."""
    for key in list(os.environ):
        if key.startswith("VIPER_RS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VIPER_RS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("graft"))


def write_tif(path, bands: np.ndarray) -> None:
    """(C, H, W) uint8 as a plain (no CRS) GeoTIFF."""
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                       count=bands.shape[0], dtype="uint8") as ds:
        ds.write(bands)


def embed(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(["embed", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def check_against_reference(npy, rgb: np.ndarray) -> None:
    got = np.load(npy)
    assert got.shape == (14, 14, 512) and got.dtype == np.float32
    ref = reference(clip_input(rgb))[0]
    cos = cosines(got, ref)
    assert cos.shape == (14, 14)
    assert cos.min() >= 0.999, f"worst patch cosine {cos.min():.5f}"


@pytest.mark.slow
def test_embed_synthetic_224_matches_graft_reference(ckpt, tmp_path, capsys):
    rgb = synthetic_rgb(224, 224, seed=11)
    tif = tmp_path / "scene.tif"
    write_tif(tif, np.moveaxis(rgb, -1, 0))
    out = tmp_path / "emb.npy"
    rc, stdout, err = embed(capsys, tif, "--detector", "graft", "--graft-checkpoint", ckpt,
                            "--device", "cpu", "--out", out)
    assert rc == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    assert "14x14x512 float32" in lines[0] and "1 window(s)" in lines[0] and " ms" in lines[0]
    assert "graft@" in lines[0] and "(cached)" not in lines[0]
    check_against_reference(out, rgb)
    # the second run reads the feature cache
    rc, stdout, _ = embed(capsys, tif, "--graft-checkpoint", ckpt, "--device", "cpu",
                          "--out", tmp_path / "again.npy")
    assert rc == 0 and "(cached)" in stdout
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), np.load(out))


@pytest.mark.slow
def test_embed_real_naip_crop_matches_graft_reference(ckpt, tmp_path, capsys, shared_data):
    src = sorted((shared_data / "naip" / "wv_landcover").glob("*_naip2014.tif"))
    if not src:
        pytest.skip("no NAIP tiles in the data folder")
    with rasterio.open(src[0]) as ds:
        bands = ds.read()[:, 16:240, 16:240]  # R, G, B, NIR, 1 m
    tif = tmp_path / "naip_crop.tif"
    write_tif(tif, bands)
    out = tmp_path / "naip.npy"
    rc, stdout, err = embed(capsys, tif, "--bands", "R,G,B,NIR", "--graft-checkpoint", ckpt,
                            "--device", "cpu", "--no-disk-cache", "--out", out)
    assert rc == 0, err
    check_against_reference(out, np.moveaxis(bands[:3], 0, -1))


def test_embed_clip_dense(tmp_path, capsys, monkeypatch):
    """--detector clip through a TorchScript CLIP archive (tiny model: 32-px windows)."""
    monkeypatch.setenv("VIPER_RS_WINDOW_PX", "32")
    monkeypatch.setenv("VIPER_RS_WINDOW_STRIDE_PX", "16")
    model = tiny_clip()
    archive = write_torchscript(model, tmp_path / "tiny.pt")
    rgb = synthetic_rgb(48, 64, seed=1)
    png = tmp_path / "small.png"
    _png(png, rgb)
    out = tmp_path / "clip.npy"
    rc, stdout, err = embed(capsys, png, "--detector", "clip", "--clip-checkpoint", archive,
                            "--device", "cpu", "--out", out)
    assert rc == 0, err
    got = np.load(out)
    assert got.shape == (3, 4, 32) and "3x4x32" in stdout and "6 window(s)" in stdout
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)
    from viper_rs.vision.modeling import ClipDenseEncoder

    with torch.inference_mode():  # top-left window = patches (0..1, 0..1)
        first = ClipDenseEncoder(model, "ref").encode(clip_input(rgb[:32, :32]))[0].numpy()
    # patch (0, 0) is only in the first window
    assert cosines(got[0, 0], first[0, 0]) > 0.9999


def _png(path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


def test_embed_errors_exit_2_with_a_clear_message(tmp_path, capsys):
    rgb = synthetic_rgb(64, 64)
    png = tmp_path / "a.png"
    _png(png, rgb)
    out = tmp_path / "o.npy"
    ckpt = tmp_path / "never_read.ckpt"  # these runs fail before the checkpoint is read
    ckpt.write_bytes(b"x")
    cases = [
        ((png, "--out", out), "needs a GRAFT checkpoint"),
        ((png, "--graft-checkpoint", tmp_path / "missing.ckpt", "--out", out), "no such file"),
        ((tmp_path / "nope.png", "--graft-checkpoint", ckpt, "--out", out), "nope.png"),
        ((png, "--graft-checkpoint", ckpt, "--out", tmp_path / "no" / "o.npy"), "does not exist"),
        ((png, "--graft-checkpoint", ckpt, "--device", "tpu", "--out", out), "device"),
        ((png, "--detector", "clip", "--out", out), "weights --download"),
    ]
    (tmp_path / "junk.ckpt").write_text("not weights")
    cases.append(((png, "--graft-checkpoint", tmp_path / "junk.ckpt", "--out", out),
                  "junk.ckpt: not a readable PyTorch checkpoint"))
    for args, words in cases:
        rc, stdout, err = embed(capsys, *args)
        assert rc == 2, (args, stdout, err)
        assert err.startswith("viper-rs: error:") and words in err, (args, err)
        assert not out.exists()


def test_embed_is_a_subcommand_of_python_m_viper_rs():
    r = subprocess.run([sys.executable, "-m", "viper_rs", "embed", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--graft-checkpoint", "--clip-checkpoint", "--clip-model", "--device", "--out",
                 "--gsd", "--bands", "--detector"):
        assert flag in r.stdout
