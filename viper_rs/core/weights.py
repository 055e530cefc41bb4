"""Model weights: what each model needs, where its file is, and downloading the public ones.

Three checkpoints can be used:

- ``graft``: the GRAFT NAIP pixel-level image tower (Mall et al., ICLR 2024). Released by its
  authors on request under an ethics agreement (https://graft.cs.cornell.edu); never
  downloaded here.
- ``clip``: OpenAI's CLIP ViT-B/16 (text tower for GRAFT, and the dense CLIP baseline).
- ``sam``: Segment Anything ViT-B (optional mask refinement).

A configured path (``--clip-checkpoint``, ``VIPER_RS_CLIP_CHECKPOINT``...) always wins;
otherwise the file is looked up under ``<cache_dir>/weights/`` by its download name, which
is where :func:`download` puts it. :func:`auto_detector` is the rule ``--detector auto``
follows.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError
from viper_rs.core.overrides import OVERRIDES, setting_hint, setting_source

log = logging.getLogger(__name__)

GRAFT_PROJECT_URL = "https://graft.cs.cornell.edu"
GRAFT_PAPER = (
    'Mall et al., "Remote Sensing Vision-Language Foundation Models without Annotations '
    'via Ground Remote Alignment", ICLR 2024 (arXiv:2312.06960)'
)
# The open_clip architecture the downloadable CLIP file belongs to (and GRAFT's text tower).
CLIP_ARCH = "ViT-B-16"
# Name under <cache_dir>/weights/ that is picked up as the GRAFT checkpoint when no path is
# configured. A local convention of this tool, not the authors' file name.
GRAFT_CACHE_NAME = "graft.ckpt"

CHUNK = 1 << 20

#: The learned building model's shipped weights: the same file as
#: ``viper_rs.vision.buildings.checkpoint.DEFAULT_WEIGHTS`` (named here because this module
#: sits below ``vision``; a test checks the two agree).
SHIPPED_BUILDING_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "vision" / "buildings" / "weights" / "buildingnet.pt"
)
#: How notes and ``auto`` reasons name the learned building model.
BUILDING_MODEL_TITLE = "the learned building model (viper_rs BuildingNet)"


@dataclass(frozen=True)
class Download:
    """One downloadable checkpoint: where it comes from and what its bytes must hash to."""

    name: str
    filename: str
    url: str
    # Full lowercase sha256 hex digest, or a prefix of it (at least 6 characters).
    sha256: str
    # Expected size in bytes when known (only used for the free-space check and messages).
    size: int | None
    # Where the checksum comes from, for the record.
    checksum_source: str


DOWNLOADS: dict[str, Download] = {
    "clip": Download(
        name="clip",
        filename="ViT-B-16.pt",
        url=(
            "https://openaipublic.azureedge.net/clip/models/"
            "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"
        ),
        sha256="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        size=None,
        checksum_source="OpenAI publishes the sha256 as the URL's directory name "
        "(open_clip's pretrained table verifies downloads against it)",
    ),
    "sam": Download(
        name="sam",
        filename="sam_vit_b_01ec64.pth",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        # Note: the "01ec64" in the file name is the start of the file's MD5
        # (01ec64d29a2fca3f0661936605ae66f8), not of its sha256.
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        size=375_042_383,
        checksum_source="sha256 and size as recorded by several independent public "
        "projects that verify this file",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """One model slot: the setting that points at its checkpoint and what it is used for."""

    name: str
    title: str
    role: str
    setting: str
    flag: str
    env: str
    download: str | None
    cache_name: str


MODELS: dict[str, ModelInfo] = {
    "graft": ModelInfo(
        name="graft",
        title="GRAFT ViT-B/16 (NAIP, pixel-level)",
        role="GRAFT image tower",
        setting="graft_checkpoint",
        flag="--graft-checkpoint",
        env="VIPER_RS_GRAFT_CHECKPOINT",
        download=None,
        cache_name=GRAFT_CACHE_NAME,
    ),
    "clip": ModelInfo(
        name="clip",
        title="CLIP ViT-B/16 (OpenAI)",
        role="CLIP text tower + dense baseline",
        setting="clip_checkpoint",
        flag="--clip-checkpoint",
        env="VIPER_RS_CLIP_CHECKPOINT",
        download="clip",
        cache_name=DOWNLOADS["clip"].filename,
    ),
    "sam": ModelInfo(
        name="sam",
        title="SAM ViT-B",
        role="SAM refinement",
        setting="sam_checkpoint",
        flag="--sam-checkpoint",
        env="VIPER_RS_SAM_CHECKPOINT",
        download="sam",
        cache_name=DOWNLOADS["sam"].filename,
    ),
}

STATUS_FOUND = "found"
STATUS_MISSING = "missing"
STATUS_BROKEN = "configured but file missing"


def weights_dir(settings: Settings) -> Path:
    """The folder downloads go to and cached checkpoints are looked up in."""
    return Path(settings.cache_dir).expanduser() / "weights"


def _graft_howto() -> str:
    return (
        f"GRAFT weights are released by the authors on request under an ethics agreement: "
        f"see {GRAFT_PROJECT_URL} ({GRAFT_PAPER}). Get the NAIP pixel-level checkpoint, then "
        f"{setting_hint('graft_checkpoint')}, or copy it to "
        f"<cache_dir>/weights/{GRAFT_CACHE_NAME}."
    )


def find_weights(settings: Settings) -> dict[str, dict[str, Any]]:
    """For ``graft``, ``clip`` and ``sam``: the configured or cached file and its status.

    Each entry has ``model``, ``role``, ``setting``, ``flag``, ``env``, ``configured``
    (the configured path or None), ``path`` (the file that would be used or None),
    ``source`` (``"configured"``, ``"cache"``, ``"pretrained"`` or None), ``status``
    (``"found"``, ``"missing"`` or ``"configured but file missing"``), ``available``,
    ``size`` (bytes or None), ``cache_path``, ``download`` (URL or None), ``problem`` (what
    is wrong with a configured path, else None) and ``note``.
    """
    wdir = weights_dir(settings)
    out: dict[str, dict[str, Any]] = {}
    for name, info in MODELS.items():
        configured = getattr(settings, info.setting)
        configured = Path(configured).expanduser() if configured is not None else None
        cache_path = wdir / info.cache_name
        entry: dict[str, Any] = {
            "model": info.title,
            "role": info.role,
            "setting": info.setting,
            "flag": info.flag,
            "env": info.env,
            "configured": str(configured) if configured is not None else None,
            "path": None,
            "source": None,
            "status": STATUS_MISSING,
            "available": False,
            "size": None,
            "cache_path": str(cache_path),
            "download": DOWNLOADS[info.download].url if info.download else None,
            "problem": None,
            "note": "",
        }
        # The downloadable CLIP file is ViT-B/16; it is not used for another architecture.
        cache_usable = name != "clip" or settings.clip_model == CLIP_ARCH
        if configured is not None:
            if configured.is_file():
                entry.update(path=str(configured), source="configured", status=STATUS_FOUND,
                             available=True, size=configured.stat().st_size)
            else:
                entry["status"] = STATUS_BROKEN
                what = "is a folder, not a file" if configured.is_dir() else "does not exist"
                entry["problem"] = entry["note"] = (
                    f"{configured} {what} (set by {setting_source(info.setting)})")
        elif cache_usable and cache_path.is_file():
            entry.update(path=str(cache_path), source="cache", status=STATUS_FOUND,
                         available=True, size=cache_path.stat().st_size)
        elif name == "clip" and settings.clip_pretrained:
            entry.update(source="pretrained", status=STATUS_FOUND, available=True)
            entry["note"] = (f"open_clip fetches {settings.clip_model} "
                             f"'{settings.clip_pretrained}' itself (needs internet once)")
        if name == "graft" and not entry["available"]:
            entry["note"] = (entry["note"] + "; " if entry["note"] else "") + _graft_howto()
        elif name == "clip" and not cache_usable and configured is None:
            entry["note"] = (entry["note"] or
                             f"clip_model is {settings.clip_model}: the downloadable "
                             f"{CLIP_ARCH} file is not used; "
                             f"{setting_hint('clip_checkpoint')}")
        elif not entry["available"] and entry["status"] == STATUS_MISSING:
            entry["note"] = f"get it with `python -m viper_rs weights --download {name}`"
        out[name] = entry
    return out


def check_configured(settings: Settings, names: list[str]) -> None:
    """ConfigError when a checkpoint of ``names`` (``graft``, ``clip``, ``sam``) is
    configured but is not a file, naming the setting and the way out."""
    found = find_weights(settings)
    problems = [f"the {MODELS[n].title} checkpoint {found[n]['problem']}" for n in names
                if found[n]["problem"]]
    if problems:
        off = (f", or turn SAM refinement off with {OVERRIDES['sam'].flag}"
               if found["sam"]["problem"] and "sam" in names else "")
        raise ConfigError("; ".join(problems) + f": fix the path or unset it{off}")


def resolve_settings(settings: Settings) -> Settings:
    """A copy of ``settings`` with checkpoints that are not configured filled from the cache.

    Configured paths are kept as they are (with ``~`` expanded), even when the file is
    missing, so the loader can report the configuration error.
    """
    found = find_weights(settings)
    update: dict[str, Path] = {}
    for name, info in MODELS.items():
        entry = found[name]
        if entry["configured"] is not None:
            update[info.setting] = Path(entry["configured"])
        elif entry["source"] == "cache":
            update[info.setting] = Path(entry["path"])
    return settings.model_copy(update=update)


def auto_detector(settings: Settings) -> str:
    """The detector ``auto`` picks: ``graft`` with GRAFT and CLIP weights, ``clip`` with CLIP
    weights, else ``spectral``."""
    found = find_weights(settings)
    if not found["clip"]["available"]:
        return "spectral"
    # GRAFT's text tower is CLIP ViT-B/16: another CLIP architecture cannot serve it.
    if found["graft"]["available"] and settings.clip_model == CLIP_ARCH:
        return "graft"
    return "clip"


def building_weights(settings: Settings) -> tuple[Path | None, str]:
    """``(file, "")`` when ``auto`` may use the learned building model (it is on and its
    weights file exists), else ``(None, why not)``. Whether the file loads is only known
    when the detector is built (:func:`viper_rs.vision.factory.build_detector`)."""
    if not settings.building_model:
        return None, "the learned building model is turned off (building_model = false)"
    configured = settings.building_checkpoint
    path = Path(configured).expanduser() if configured is not None else SHIPPED_BUILDING_WEIGHTS
    if not path.is_file():
        if configured is not None:
            return None, (f"the configured building model weights {path} are missing (set by "
                          f"{setting_source('building_checkpoint')})")
        return None, f"the shipped building model weights {path} are missing"
    return path, ""


def auto_reason(settings: Settings, building_error: str | None = None) -> str:
    """One sentence saying which detector ``auto`` picks and why (for notes and the CLI),
    and who answers building concepts. ``building_error`` is why the building weights could
    not be loaded (when the caller tried)."""
    found = find_weights(settings)
    choice = auto_detector(settings)
    broken = [e["problem"] for e in found.values() if e["problem"]]
    tail = f"; note: {'; '.join(broken)}" if broken else ""
    path, why = building_weights(settings)
    if building_error:
        path, why = None, building_error
    if path is not None:
        head = f"auto -> {choice}, buildings by {BUILDING_MODEL_TITLE}"
        tail += (f"; the building model answers building concepts (building, house, roof, "
                 f"residential/commercial building) wherever it covers the image (R,G,B at a "
                 f"ground resolution it was validated for), {choice} elsewhere")
    else:
        head = f"auto -> {choice}"
        tail += f"; buildings by {choice} too: {why}"
    if choice == "graft":
        return head + ": GRAFT image tower and CLIP text tower weights are present" + tail
    if choice == "clip" and found["graft"]["available"]:
        return (f"{head}: a GRAFT checkpoint is present but clip_model is "
                f"{settings.clip_model}, not GRAFT's text tower {CLIP_ARCH}" + tail)
    if choice == "clip":
        return (f"{head}: CLIP weights are present but no GRAFT checkpoint "
                "(see docs/weights.md)" + tail)
    return (f"{head}: no CLIP weights (needed by the graft and clip detectors); "
            f"run `python -m viper_rs weights --download clip`, or "
            f"{setting_hint('clip_checkpoint')}" + tail)


def _matches(digest: str, expected: str) -> bool:
    expected = expected.strip().lower()
    return bool(expected) and digest.startswith(expected)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_url(name: str, url: str | None = None) -> str:
    """The URL ``name`` is downloaded from: ``url``, else ``VIPER_RS_WEIGHTS_URL_<NAME>``,
    else the built-in one."""
    spec = _spec(name)
    return url or os.environ.get(f"VIPER_RS_WEIGHTS_URL_{name.upper()}") or spec.url


def _spec(name: str) -> Download:
    if name == "graft":
        raise ConfigError(_graft_howto())
    if name not in DOWNLOADS:
        raise ConfigError(f"no download named {name!r}; choose one of {', '.join(DOWNLOADS)}")
    return DOWNLOADS[name]


def download(name: str, dest_dir: Path, url: str | None = None, progress: bool = True,
             sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download checkpoint ``name`` (``clip`` or ``sam``) into ``dest_dir``; returns its path.

    The bytes go to ``<file>.part`` and are renamed into place only after the sha256 check
    (``sha256`` overrides the built-in digest; a prefix is accepted). A file already in
    place with the right checksum is kept; an interrupted ``.part`` is resumed when the
    server honours HTTP Range requests. Network failures and checksum mismatches raise
    :class:`ConfigError`; a file with the wrong checksum is deleted.
    """
    spec = _spec(name)
    src = download_url(name, url)
    expected = (sha256 or spec.sha256).strip().lower()
    if len(expected) < 6 or any(c not in "0123456789abcdef" for c in expected):
        raise ConfigError(f"{name}: a sha256 (prefix) needs at least 6 hex digits, "
                          f"got {expected!r}")
    scheme = urllib.parse.urlparse(src).scheme
    if scheme not in ("http", "https"):
        raise ConfigError(f"{name}: only http(s) URLs can be downloaded, got {src!r}")
    dest_dir = Path(dest_dir).expanduser()
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the weights folder {dest_dir}: {exc}") from None
    dest = dest_dir / spec.filename
    part = dest_dir / (spec.filename + ".part")

    if dest.is_file():
        if _matches(sha256_file(dest), expected):
            log.info("%s: %s is already there with the right checksum", name, dest)
            return dest
        log.warning("%s: %s has the wrong checksum; deleting it and downloading again",
                    name, dest)
        dest.unlink()

    have = part.stat().st_size if part.is_file() else 0
    digest = _fetch(name, src, part, have, spec, progress, timeout)

    if not _matches(digest, expected):
        part.unlink(missing_ok=True)
        raise ConfigError(
            f"{name}: checksum mismatch for {src}: expected sha256 {expected}, got {digest}; "
            f"the downloaded file was deleted. Try again, or download it by hand from "
            f"{spec.url} and check its sha256"
        )
    os.replace(part, dest)
    log.info("%s: saved %s (sha256 %s)", name, dest, digest)
    return dest


def _fetch(name: str, src: str, part: Path, have: int, spec: Download, progress: bool,
           timeout: float) -> str:
    """Stream ``src`` into ``part``, continuing after byte ``have`` when the server allows;
    returns the sha256 of the whole file."""
    by_hand = (f"No internet? Download {spec.filename} by hand from {spec.url} and "
               f"{setting_hint(MODELS[name].setting)} (or put it in the weights folder "
               f"{part.parent})")
    headers = {"User-Agent": "viper-rs"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(src, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # The partial file cannot be continued (already complete, or the remote file
            # changed): start from the beginning.
            part.unlink(missing_ok=True)
            return _fetch(name, src, part, 0, spec, progress, timeout)
        raise ConfigError(f"{name}: download from {src} failed: HTTP {exc.code} "
                          f"{exc.reason}. {by_hand}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"{name}: cannot reach {src} ({reason}). {by_hand}") from None

    hasher = hashlib.sha256()
    with resp:
        resumed = bool(have) and resp.status == 206
        if resumed:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        elif have:
            log.info("%s: the server does not resume; downloading from the start", name)
            have = 0
        length = resp.headers.get("Content-Length")
        expected_total = have + int(length) if length and length.isdigit() else None
        _check_space(part.parent, (expected_total or spec.size or 0) - have)
        # On a terminal: a live bar. Elsewhere (logs, CI): plain ASCII, a line every 10 s.
        is_tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        bar = tqdm(total=expected_total or spec.size, initial=have, unit="B", unit_scale=True,
                   unit_divisor=1024, desc=spec.filename, disable=not progress,
                   file=sys.stderr, mininterval=0.2 if is_tty else 10.0,
                   dynamic_ncols=is_tty, ncols=None if is_tty else 80, ascii=not is_tty)
        got = have
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except (OSError, http.client.HTTPException) as exc:
            raise ConfigError(f"{name}: download from {src} broke off after {got} bytes "
                              f"({exc}); run the command again to resume. {by_hand}") from None
        finally:
            bar.close()
    if expected_total is not None and got < expected_total:
        raise ConfigError(f"{name}: download from {src} ended after {got} of "
                          f"{expected_total} bytes; run the command again to resume")
    return hasher.hexdigest()


def _check_space(folder: Path, need: int) -> None:
    if need <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need:
        raise ConfigError(f"not enough disk space in {folder}: the download needs "
                          f"{need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB are free")
