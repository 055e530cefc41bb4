"""Saving and strictly loading BuildingNet weights (the shipped file and trained ones).

A checkpoint is a ``torch.save`` dict ``{"format": FORMAT, "config": BuildingNetConfig
dict, "state_dict": tensors (float ones in fp16), "meta": JSON-able facts about the
training}``. Loading reads it with ``torch.load(weights_only=True)`` (no code runs), builds
the model from the stored config and loads every tensor strictly in float32. Every failure
is a :class:`~viper_rs.vision.build.CheckpointError` with a one-line reason and a fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from viper_rs.core.errors import first_line
from viper_rs.core.files import require_file
from viper_rs.vision.build import CheckpointError, check_state_keys, resolve_device, save_atomically
from viper_rs.vision.buildings.model import BuildingNet, BuildingNetConfig

#: The weights that ship with the package.
DEFAULT_WEIGHTS: Path = Path(__file__).parent / "weights" / "buildingnet.pt"
#: The ``format`` tag of a BuildingNet checkpoint.
FORMAT = "viper_rs.buildingnet/1"
_SHOW = 4
_HINT = (
    "; use the shipped weights (viper_rs/vision/buildings/weights/buildingnet.pt) or train "
    "new ones with `python -m viper_rs train-buildings --data DIR --out FILE`"
)


def save_building_model(model: BuildingNet, path: Path, meta: dict) -> Path:
    """Write ``model`` (float tensors as fp16) with its config and ``meta`` to ``path``
    atomically (a temporary file in the same folder, then a rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
        .clone()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": state,
        "meta": _jsonable(meta),
    }
    return save_atomically(payload, path)


def _jsonable(meta: dict) -> dict:
    """``meta`` as plain JSON types (str subclasses such as torch's version string would
    need pickled classes, which ``weights_only`` loading refuses)."""
    try:
        return json.loads(json.dumps(meta, default=str))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint meta is not JSON-able ({exc})") from None


def _show(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def load_building_model(
    path: Path | None = None, device: str | torch.device = "cpu"
) -> tuple[BuildingNet, dict]:
    """The BuildingNet stored at ``path`` (default :data:`DEFAULT_WEIGHTS`) in float32, in
    eval mode on ``device``, and the checkpoint's ``meta`` dict.

    Raises CheckpointError when the file is missing, unreadable or holds another model."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    require_file(path, CheckpointError, "a BuildingNet weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign bytes, pickled objects: all unreadable
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path}: not a BuildingNet checkpoint (holds the Python object "
                f"{found.group(1)}, which cannot be loaded safely)" + _HINT
            ) from None
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({first_line(exc)[:200]}); "
            "the file may be truncated: download or train it again"
        ) from None
    what = "BuildingNet"
    if not isinstance(obj, Mapping) or "format" not in obj:
        kind = type(obj).__name__
        keys = _show([str(k) for k in obj]) if isinstance(obj, Mapping) else ""
        raise CheckpointError(
            f"{path}: not a {what} checkpoint (a {kind} without a 'format' key"
            + (f"; keys: {keys}" if keys else "") + ")" + _HINT
        )
    if obj["format"] != FORMAT:
        raise CheckpointError(
            f"{path}: not a {what} checkpoint (format {obj['format']!r}, expected {FORMAT!r})"
            + _HINT
        )
    cfg_dict, state = obj.get("config"), obj.get("state_dict")
    if not isinstance(cfg_dict, Mapping) or not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path}: {what} checkpoint without a 'config' dict and a 'state_dict'" + _HINT
        )
    try:
        config = BuildingNetConfig.from_dict(dict(cfg_dict))
        model = BuildingNet(config)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: {what} config does not fit this version ({first_line(exc)[:200]})" + _HINT
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_keys(path, f"matching {what}", {str(k): v for k, v in state.items()}, expected,
                hint=_HINT)
    state32 = {
        k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in state.items()
    }
    model.load_state_dict(state32, strict=True)
    model.to(resolve_device(device)).eval()
    meta = obj.get("meta") or {}
    return model, dict(meta) if isinstance(meta, Mapping) else {}
