"""Model weights: lookup, the `auto` rule, downloads from a local HTTP server, the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from viper_rs.cli import main
from viper_rs.core import weights as W
from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No VIPER_RS_* setting from the caller's environment leaks into these tests."""
    for key in ("GRAFT_CHECKPOINT", "CLIP_CHECKPOINT", "SAM_CHECKPOINT", "CACHE_DIR",
                "CLIP_MODEL", "CLIP_PRETRAINED", "WEIGHTS_URL_CLIP", "WEIGHTS_URL_SAM"):
        monkeypatch.delenv(f"VIPER_RS_{key}", raising=False)


class Server:
    """A local HTTP server with one file; ``ranges`` says whether it honours Range."""

    def __init__(self, data: bytes = PAYLOAD, ranges: bool = True):
        self.data, self.ranges, self.requests = data, ranges, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path != "/model.bin":
                    self.send_error(404)
                    return
                body, status = outer.data, 200
                rng = self.headers.get("Range")
                if rng and outer.ranges:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    body, status = body[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/model.bin"


# --- downloads ---------------------------------------------------------------------------


def test_download_verifies_and_lands_atomically(tmp_path, capsys):
    with Server() as srv:
        path = W.download("clip", tmp_path / "w", url=srv.url, sha256=SHA, progress=True)
    assert path == tmp_path / "w" / "ViT-B-16.pt"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["ViT-B-16.pt"]  # no .part left
    out = capsys.readouterr()
    assert out.out == ""  # the progress bar goes to stderr only, and does not fail off a tty


def test_download_accepts_sha256_prefix_and_skips_a_good_existing_file(tmp_path):
    with Server() as srv:
        W.download("sam", tmp_path, url=srv.url, sha256=SHA[:10], progress=False)
        W.download("sam", tmp_path, url=srv.url, sha256=SHA[:10], progress=False)
        assert len(srv.requests) == 1  # the second call found the verified file
    assert (tmp_path / "sam_vit_b_01ec64.pth").read_bytes() == PAYLOAD


def test_wrong_checksum_raises_and_leaves_no_file(tmp_path):
    with Server() as srv, pytest.raises(ConfigError, match="checksum mismatch"):
        W.download("clip", tmp_path, url=srv.url, sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_with_wrong_checksum_is_replaced(tmp_path):
    (tmp_path / "ViT-B-16.pt").write_bytes(b"corrupt")
    with Server() as srv:
        path = W.download("clip", tmp_path, url=srv.url, sha256=SHA, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_unreachable_url_fails_quickly_with_advice(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        W.download("clip", tmp_path, url=closed_port_url(), sha256=SHA, progress=False)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert "No internet?" in msg and "--clip-checkpoint" in msg and W.DOWNLOADS["clip"].url in msg
    assert not (tmp_path / "ViT-B-16.pt").exists()


def test_http_error_is_a_config_error(tmp_path):
    with Server() as srv, pytest.raises(ConfigError, match="HTTP 404"):
        W.download("sam", tmp_path, url=srv.url.replace("model.bin", "nope"), sha256=SHA,
                   progress=False)


def test_resume_with_range(tmp_path):
    (tmp_path / "ViT-B-16.pt.part").write_bytes(PAYLOAD[:300_000])
    with Server() as srv:
        path = W.download("clip", tmp_path, url=srv.url, sha256=SHA, progress=False)
        assert srv.requests[0]["range"] == "bytes=300000-"
    assert path.read_bytes() == PAYLOAD


def test_server_without_range_restarts_from_scratch(tmp_path):
    (tmp_path / "ViT-B-16.pt.part").write_bytes(b"x" * 1000)  # junk: must not be kept
    with Server(ranges=False) as srv:
        path = W.download("clip", tmp_path, url=srv.url, sha256=SHA, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_bad_partial_file_fails_checksum_then_is_gone(tmp_path):
    (tmp_path / "ViT-B-16.pt.part").write_bytes(b"x" * 1000)  # resumed onto junk
    with Server() as srv, pytest.raises(ConfigError, match="checksum mismatch"):
        W.download("clip", tmp_path, url=srv.url, sha256=SHA, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_url_override_from_environment(tmp_path, monkeypatch):
    with Server() as srv:
        monkeypatch.setenv("VIPER_RS_WEIGHTS_URL_SAM", srv.url)
        assert W.download_url("sam") == srv.url
        W.download("sam", tmp_path, sha256=SHA, progress=False)
        assert srv.requests


def test_graft_and_unknown_names_are_not_downloadable(tmp_path):
    with pytest.raises(ConfigError, match="ethics agreement"):
        W.download("graft", tmp_path)
    with pytest.raises(ConfigError, match="no download named"):
        W.download("vit-h", tmp_path)


def test_download_table_is_pinned():
    clip, sam = W.DOWNLOADS["clip"], W.DOWNLOADS["sam"]
    # OpenAI's URL carries the file's full sha256 as its directory name.
    assert clip.url.split("/")[-2] == clip.sha256 and len(clip.sha256) == 64
    assert sam.url.endswith(sam.filename) and len(sam.sha256) == 64


# --- lookup and the auto rule ------------------------------------------------------------


def make(tmp_path: Path, **kw) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", **kw)


def test_nothing_configured_means_spectral(tmp_path):
    s = make(tmp_path)
    found = W.find_weights(s)
    assert {e["status"] for e in found.values()} == {"missing"}
    assert W.auto_detector(s) == "spectral"
    assert "spectral" in W.auto_reason(s) and "--download clip" in W.auto_reason(s)
    assert "graft.cs.cornell.edu" in found["graft"]["note"]


def test_configured_files(tmp_path):
    clip, graft = tmp_path / "clip.pt", tmp_path / "graft.ckpt"
    clip.write_bytes(b"c" * 10)
    s = make(tmp_path, clip_checkpoint=clip)
    found = W.find_weights(s)
    assert (found["clip"]["status"], found["clip"]["source"], found["clip"]["size"]) == (
        "found", "configured", 10)
    assert W.auto_detector(s) == "clip"
    graft.write_bytes(b"g")
    assert W.auto_detector(make(tmp_path, clip_checkpoint=clip, graft_checkpoint=graft)) == "graft"
    # GRAFT alone is not enough: its text tower is CLIP.
    assert W.auto_detector(make(tmp_path, graft_checkpoint=graft)) == "spectral"
    # ... and it is CLIP ViT-B/16: with another CLIP architecture only `clip` is possible.
    other = make(tmp_path, clip_checkpoint=clip, graft_checkpoint=graft, clip_model="ViT-L-14")
    assert W.auto_detector(other) == "clip" and "ViT-L-14" in W.auto_reason(other)


def test_configured_but_missing(tmp_path):
    s = make(tmp_path, clip_checkpoint=tmp_path / "nope.pt", sam_checkpoint=tmp_path)
    found = W.find_weights(s)
    assert found["clip"]["status"] == "configured but file missing"
    assert "does not exist" in found["clip"]["note"]
    assert found["sam"]["status"] == "configured but file missing"
    assert "folder" in found["sam"]["note"]
    assert W.auto_detector(s) == "spectral"
    assert "nope.pt" in W.auto_reason(s)
    # The configured (broken) path is kept, not silently replaced by a cached file.
    wdir = W.weights_dir(s)
    wdir.mkdir(parents=True)
    (wdir / "ViT-B-16.pt").write_bytes(b"c")
    assert W.resolve_settings(s).clip_checkpoint == tmp_path / "nope.pt"


def test_cache_dir_files_are_found_and_resolved(tmp_path):
    s = make(tmp_path)
    wdir = W.weights_dir(s)
    wdir.mkdir(parents=True)
    (wdir / "ViT-B-16.pt").write_bytes(b"c")
    (wdir / "sam_vit_b_01ec64.pth").write_bytes(b"s")
    found = W.find_weights(s)
    assert found["clip"]["source"] == "cache" and found["sam"]["source"] == "cache"
    assert W.auto_detector(s) == "clip"
    r = W.resolve_settings(s)
    assert r.clip_checkpoint == wdir / "ViT-B-16.pt"
    assert r.sam_checkpoint == wdir / "sam_vit_b_01ec64.pth"
    assert r.graft_checkpoint is None and s.clip_checkpoint is None  # input unchanged
    (wdir / "graft.ckpt").write_bytes(b"g")
    assert W.auto_detector(s) == "graft"
    # The cached CLIP file is ViT-B/16: not used for another architecture.
    other = make(tmp_path, clip_model="ViT-L-14")
    assert W.find_weights(other)["clip"]["status"] == "missing"
    assert W.resolve_settings(other).clip_checkpoint is None


def test_pretrained_tag_counts_as_configured_clip(tmp_path):
    s = make(tmp_path, clip_pretrained="openai")
    assert W.find_weights(s)["clip"]["source"] == "pretrained"
    assert W.auto_detector(s) == "clip"


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sam.pth").write_bytes(b"s")
    s = make(tmp_path, sam_checkpoint=Path("~/sam.pth"))
    assert W.find_weights(s)["sam"]["status"] == "found"
    assert W.resolve_settings(s).sam_checkpoint == tmp_path / "sam.pth"


# --- CLI ---------------------------------------------------------------------------------


def test_cli_table(tmp_path, capsys):
    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"c")
    assert main(["weights", "--cache-dir", str(tmp_path), "--clip-checkpoint", str(clip),
                 "--sam-checkpoint", str(tmp_path / "missing.pth")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["model", "role"]
    graft = next(ln for ln in lines if ln.startswith("GRAFT"))
    assert "GRAFT image tower" in graft and "missing" in graft
    clip_line = next(ln for ln in lines if ln.startswith("CLIP"))
    assert "found" in clip_line and str(clip) in clip_line
    sam = next(ln for ln in lines if ln.startswith("SAM"))
    assert "configured but file missing" in sam and "missing.pth" in sam
    assert "auto -> clip" in out
    assert "graft.cs.cornell.edu" in out


def test_cli_json_with_environment(tmp_path, capsys, monkeypatch):
    graft, clip = tmp_path / "g.ckpt", tmp_path / "c.pt"
    graft.write_bytes(b"g")
    clip.write_bytes(b"c")
    monkeypatch.setenv("VIPER_RS_GRAFT_CHECKPOINT", str(graft))
    monkeypatch.setenv("VIPER_RS_CLIP_CHECKPOINT", str(clip))
    assert main(["weights", "--cache-dir", str(tmp_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["auto"] == "graft" and d["downloaded"] == []
    assert d["weights_dir"] == str(tmp_path / "weights")
    assert d["models"]["graft"]["path"] == str(graft)
    assert d["models"]["sam"]["status"] == "missing"
    assert d["models"]["sam"]["download"] == W.DOWNLOADS["sam"].url


def test_cli_download_json_keeps_stdout_clean(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(W.DOWNLOADS, "clip", dataclasses.replace(W.DOWNLOADS["clip"], sha256=SHA))
    with Server() as srv:
        monkeypatch.setenv("VIPER_RS_WEIGHTS_URL_CLIP", srv.url)
        assert main(["weights", "--download", "clip", "--cache-dir", str(tmp_path),
                     "--json"]) == 0
    d = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON document
    path = tmp_path / "weights" / "ViT-B-16.pt"
    assert d["downloaded"] == [str(path)] and path.read_bytes() == PAYLOAD
    assert d["models"]["clip"]["source"] == "cache" and d["auto"] == "clip"


def test_cli_download_failure_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIPER_RS_WEIGHTS_URL_CLIP", closed_port_url())
    assert main(["weights", "--download", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "No internet?" in err and "--clip-checkpoint" in err
    assert main(["weights", "--download", "graft", "--cache-dir", str(tmp_path)]) == 2
    assert "ethics agreement" in capsys.readouterr().err


# ---------------------------------------------------------------------- issue 22
@pytest.mark.parametrize("model, detector", [("clip", "clip"), ("graft", "graft"),
                                             ("sam", "clip")])
def test_a_configured_checkpoint_that_is_not_a_file_names_its_setting(tmp_path: Path,
                                                                      model: str, detector: str):
    """Before loading anything: which checkpoint, which setting and the way out, in the
    CLI's words (flag or variable) and in the app's (the variable alone)."""
    from viper_rs.ui.session import app_text
    from viper_rs.vision.factory import build_detector

    info = W.MODELS[model]
    missing = tmp_path / "nope.pt"
    settings = Settings(cache_dir=tmp_path, **{info.setting: missing})
    with pytest.raises(ConfigError) as err:
        build_detector(detector, settings)
    text = str(err.value)
    assert f"{missing} does not exist (set by {info.flag} or {info.env})" in text, text
    assert info.title in text and "fix the path or unset it" in text
    assert ("--no-sam" in text) == (model == "sam")
    app = app_text(text)
    assert f"(set by {info.env})" in app and info.flag not in app and "--no-sam" not in app
    folder = Settings(cache_dir=tmp_path, **{info.setting: tmp_path})
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        build_detector(detector, folder)


def test_a_configured_building_checkpoint_that_is_missing_names_its_setting(tmp_path: Path):
    from viper_rs.vision.build import CheckpointError
    from viper_rs.vision.factory import build_auto_buildings

    settings = Settings(cache_dir=tmp_path, building_checkpoint=tmp_path / "b.pt")
    with pytest.raises(CheckpointError) as err:
        build_auto_buildings(settings)
    text = str(err.value)
    assert "no such file" in text and "set by VIPER_RS_BUILDING_CHECKPOINT" in text
    assert "VIPER_RS_BUILDING_MODEL=0 to turn the model off" in text
    assert "(set by VIPER_RS_BUILDING_CHECKPOINT)" in W.building_weights(settings)[1]
