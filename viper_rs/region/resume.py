"""A resumable region run: per-chip results stored as they arrive (one .npz per chip and
query, plus a manifest naming the run), so a stopped run continues where it stopped.

Nothing in the folder is trusted: the manifest is read bounded (a regular file inside the
folder, at most 1 MB, JSON at most 64 levels deep); each chip file has a sha256 digest
written beside it before it (``.npz.sha256``), and is loaded only when the digest matches
and its arrays' headers agree with the chip's own shape from the layout (sizes and types
of the packed mask, scores and instance ids) - checked before any array is allocated.
A mismatch refuses the resume (InputError naming the chip): use a new folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.errors import InputError
from viper_rs.core.files import loads_json, read_small_text
from viper_rs.region.scan import ChipResult, QueryResult

MANIFEST = "manifest.json"
#: Suffix of the digest file written beside each chip file.
DIGEST = ".sha256"
#: Bytes a stored chip may hold per core pixel (packed mask, float64 scores, int64 ids)
#: plus the zip's and the metadata's own bytes.
CHIP_BYTES_PER_PX = 17
CHIP_FIXED_BYTES = 1_000_000


class ResumeStore:
    """The folder of one run. ``recipe`` (question, detector, grid, chip and halo sizes...)
    must equal the stored manifest's: a folder of another run is refused with the reason."""

    def __init__(self, folder: str | Path, recipe: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.recipe = json.loads(json.dumps(recipe, default=str))
        path = self.folder / MANIFEST
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--resume {self.folder}: not a folder; give an empty or new folder")
        if path.exists() or path.is_symlink():
            what = f"--resume {self.folder}: {MANIFEST}"
            stored = loads_json(read_small_text(path, InputError, f"--resume {MANIFEST}",
                                                inside=self.folder), InputError, what)
            if not isinstance(stored, dict):
                raise InputError(f"{what} is not a run's manifest (a JSON object); use a new "
                                 "folder")
            diff = [k for k in sorted(set(stored) | set(self.recipe)) if stored.get(k) != self.recipe.get(k)]
            if diff:
                k = diff[0]
                raise InputError(
                    f"--resume {self.folder} holds another run: its {k} is {stored.get(k)!r}, "
                    f"this run's is {self.recipe.get(k)!r}; use another folder")
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise InputError(f"--resume {self.folder}: a folder that is not a region run "
                             f"(no {MANIFEST}); give an empty or new folder")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, json.dumps(self.recipe, indent=1).encode())

    def _path(self, chip_id: str, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.folder / f"{chip_id}__{digest}.npz"

    def load(self, chip_id: str, keys: list[str],
             shape: tuple[int, int] | None = None) -> ChipResult | None:
        """The stored result of ``chip_id`` (its core ``shape`` rows x columns, from the
        layout) for as many of ``keys`` as are stored (a skipped chip holds none), or None
        when nothing is stored for it. InputError when a stored chip was changed after its
        run wrote it (digest) or does not fit the chip (shape, sizes, types)."""
        skip = self.folder / f"{chip_id}__skipped.json"
        if skip.exists():
            return ChipResult(chip_id=chip_id, status="skipped", error="no valid pixel", resumed=True)
        res = ChipResult(chip_id=chip_id, status="ok", resumed=True)
        for key in keys:
            path = self._path(chip_id, key)
            if not path.exists() and not path.is_symlink():
                continue
            q, valid_m2 = self._load_one(chip_id, path, shape)
            res.queries[key] = q
            res.valid_m2 = valid_m2
        return res if res.queries else None

    def verify(self, shapes: dict[str, tuple[int, int]]) -> int:
        """Check every stored chip file before the run uses any (``shapes``: each chip id of
        this run's layout and its core's rows x columns); returns how many were checked.
        InputError naming the first that was changed after its run wrote it, does not fit
        its chip, or names a chip the layout does not have."""
        n = 0
        for path in sorted(self.folder.glob("*.npz")):
            chip_id = path.name.split("__", 1)[0]
            if chip_id not in shapes:
                raise self._refuse(chip_id, path, "is not a chip of this run's layout")
            self._load_one(chip_id, path, shapes[chip_id])
            n += 1
        return n

    def _refuse(self, chip_id: str, path: Path, why: str) -> InputError:
        return InputError(f"--resume {self.folder}: stored chip {chip_id} ({path.name}) {why}; "
                          "the folder was changed after its run wrote it: use a new --resume "
                          "folder")

    def _load_one(self, chip_id: str, path: Path,
                  shape: tuple[int, int] | None) -> tuple[QueryResult, float]:
        """One stored chip file, checked (digest, then array headers, then contents)."""
        import stat

        try:
            st = os.stat(path)
        except OSError as exc:
            raise self._refuse(chip_id, path, f"cannot be read ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode) or not path.resolve().is_relative_to(self.folder.resolve()):
            raise self._refuse(chip_id, path, "is not a regular file inside the folder")
        if shape is not None and st.st_size > CHIP_FIXED_BYTES + CHIP_BYTES_PER_PX * shape[0] * shape[1]:
            raise self._refuse(chip_id, path, f"holds {st.st_size:,} bytes, more than a "
                               f"{shape[0]} x {shape[1]} px chip can")
        try:
            want = read_small_text(Path(str(path) + DIGEST), InputError, "digest",
                                   limit=200, inside=self.folder).strip()
        except InputError:
            raise self._refuse(chip_id, path, "has no readable digest") from None
        if _file_digest(path) != want:
            raise self._refuse(chip_id, path, "does not match the digest its run wrote")
        try:
            heads = _npz_headers(path)
            h, w = shape if shape is not None else (0, 0)
            _check_headers(heads, shape)
            with np.load(path, allow_pickle=False) as z:
                meta = loads_json(str(z["meta"]), ValueError, "meta")
                if not isinstance(meta, dict):
                    raise ValueError("its metadata is not an object")
                stored_shape = tuple(int(v) for v in meta["shape"])
                if shape is not None and stored_shape != (h, w):
                    raise ValueError(f"claims shape {stored_shape}, the chip is {(h, w)}")
                packed, scores = z["packed"], z["scores"]
                inst = z["instances"] if "instances" in z.files else None
                n = int(np.unpackbits(packed, count=stored_shape[0] * stored_shape[1]).sum())
                if scores.shape != (n,) or (inst is not None and inst.shape != (n,)):
                    raise ValueError(f"{n} foreground pixels but {scores.shape[0]} scores")
                if not np.all(np.isfinite(scores)):
                    raise ValueError("non-finite scores")
                valid_m2 = float(meta["valid_m2"])
                if not (math.isfinite(valid_m2) and valid_m2 >= 0):
                    raise ValueError(f"valid area {valid_m2}")
                q = QueryResult(label=str(meta["label"]), notes=[str(v) for v in meta["notes"]],
                                shape=stored_shape, detector=str(meta.get("detector", "")),
                                packed=packed, scores=scores, instances=inst)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise self._refuse(chip_id, path, f"does not fit the chip ({exc})") from None
        return q, valid_m2

    def save(self, result: ChipResult) -> None:
        """Store a finished chip (ok or skipped; failed chips are tried again next run)."""
        if result.status == "skipped":
            _write_atomic(self.folder / f"{result.chip_id}__skipped.json", b"{}")
            return
        if result.status != "ok":
            return
        for key, q in result.queries.items():
            meta = {"key": key, "label": q.label, "notes": q.notes, "shape": list(q.shape),
                    "detector": q.detector,
                    "valid_m2": result.valid_m2}
            arrays = {"meta": np.array(json.dumps(meta)), "packed": q.packed, "scores": q.scores}
            if q.instances is not None:
                arrays["instances"] = q.instances
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            path = self._path(result.chip_id, key)
            # The digest first: a chip file never exists without the digest of its contents.
            _write_atomic(Path(str(path) + DIGEST), _file_digest(Path(tmp)).encode())
            os.replace(tmp, path)


def _file_digest(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array of an .npz, from the headers only (nothing allocated)."""
    from numpy.lib import format as npformat

    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                raise ValueError(f"unexpected member {name!r}")
            with zf.open(name) as fh:
                version = npformat.read_magic(fh)
                if version == (1, 0):
                    shp, _, dtype = npformat.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shp, _, dtype = npformat.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"npy format {version}")
            out[name[:-4]] = (tuple(shp), np.dtype(dtype))
    return out


def _check_headers(heads: dict[str, tuple[tuple[int, ...], np.dtype]],
                   shape: tuple[int, int] | None) -> None:
    """ValueError unless the arrays are those :meth:`ResumeStore.save` writes for a chip
    core of ``shape``: meta text, a uint8 packed mask of its pixels, 1-D float scores and
    integer instance ids no longer than its pixels."""
    for need in ("meta", "packed", "scores"):
        if need not in heads:
            raise ValueError(f"no {need!r} array")
    if set(heads) - {"meta", "packed", "scores", "instances"}:
        raise ValueError(f"unexpected arrays {sorted(set(heads))}")
    meta_shape, meta_type = heads["meta"]
    if meta_shape != () or meta_type.kind != "U" or meta_type.itemsize > 400_000:
        raise ValueError("metadata is not a short text")
    px = shape[0] * shape[1] if shape is not None else None
    p_shape, p_type = heads["packed"]
    if p_type != np.uint8 or len(p_shape) != 1 or (px is not None and p_shape[0] != (px + 7) // 8):
        raise ValueError(f"packed mask {p_shape} {p_type} for a chip of {shape}")
    s_shape, s_type = heads["scores"]
    if s_type.kind != "f" or len(s_shape) != 1 or (px is not None and s_shape[0] > px):
        raise ValueError(f"scores {s_shape} {s_type}")
    if "instances" in heads:
        i_shape, i_type = heads["instances"]
        if i_type.kind not in "iu" or i_shape != s_shape:
            raise ValueError(f"instance ids {i_shape} {i_type}")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
