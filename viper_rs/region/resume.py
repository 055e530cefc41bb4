"""A resumable region run: per-chip results stored as they arrive (one .npz per chip and
query, plus a manifest naming the run), so a stopped run continues where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.errors import InputError
from viper_rs.region.scan import ChipResult, QueryResult

MANIFEST = "manifest.json"


class ResumeStore:
    """The folder of one run. ``recipe`` (question, detector, grid, chip and halo sizes...)
    must equal the stored manifest's: a folder of another run is refused with the reason."""

    def __init__(self, folder: str | Path, recipe: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.recipe = json.loads(json.dumps(recipe, default=str))
        path = self.folder / MANIFEST
        if path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"--resume {self.folder}: unreadable {MANIFEST} ({exc})") from None
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

    def load(self, chip_id: str, keys: list[str]) -> ChipResult | None:
        """The stored result of ``chip_id`` for as many of ``keys`` as are stored (a skipped
        chip holds none), or None when nothing is stored for it."""
        skip = self.folder / f"{chip_id}__skipped.json"
        if skip.exists():
            return ChipResult(chip_id=chip_id, status="skipped", error="no valid pixel", resumed=True)
        res = ChipResult(chip_id=chip_id, status="ok", resumed=True)
        for key in keys:
            path = self._path(chip_id, key)
            if not path.exists():
                continue
            try:
                with np.load(path, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    inst = z["instances"] if "instances" in z.files else None
                    res.queries[key] = QueryResult(
                        label=meta["label"], notes=meta["notes"], shape=tuple(meta["shape"]),
                        detector=meta.get("detector", ""),
                        packed=z["packed"], scores=z["scores"], instances=inst)
                    res.valid_m2 = float(meta["valid_m2"])
            except (OSError, ValueError, KeyError):
                continue  # a damaged file is computed again
        return res if res.queries else None

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
            os.replace(tmp, self._path(result.chip_id, key))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
