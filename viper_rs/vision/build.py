"""Loading model weights: devices, checkpoint files, GRAFT and open_clip CLIP.

GRAFT's published checkpoints are PyTorch Lightning ``.ckpt`` files whose ``state_dict``
holds the image tower in Hugging Face ``CLIPVisionModel`` naming under
``satellite_image_backbone.`` plus the patch head ``projector.0`` (LayerNorm) and
``projector.1`` (Linear) and ``logit_scale``. :func:`load_graft` maps those names onto the
open_clip trunk of :class:`GraftPixelModel` and loads strictly: every model tensor must
come from the file with the right shape, and the only key it ignores is the
``embeddings.position_ids`` buffer that older transformers versions saved.

Which optional parts a checkpoint has decides the model built for it: a
``visual_projection.weight`` (``CLIPVisionModelWithProjection``) becomes open_clip's
``proj`` (transposed) and gives :meth:`GraftPixelModel.encode_image`; a
``projector.1.bias`` gives the head a bias; ``logit_scale`` is kept as a parameter.
None of them change the patch embeddings.

Files are read with ``torch.load(weights_only=True)``: arbitrary pickled objects never
run. Lightning's ``hyper_parameters`` may hold such objects (``argparse.Namespace``,
paths...); they are replaced by inert placeholders, since only tensors are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, first_line
from viper_rs.core.files import require_file
from viper_rs.core.overrides import setting_hint, setting_source
from viper_rs.vision.modeling.graft import GraftConfig, GraftPixelModel
from viper_rs.vision.modeling.keymap import IGNORED_HF_KEYS, hf_to_open_clip, open_clip_to_hf

log = logging.getLogger(__name__)

BACKBONE = "satellite_image_backbone."
VISION = BACKBONE + "vision_model."
VISUAL_PROJECTION = BACKBONE + "visual_projection.weight"
# Non-weight entries of OpenAI archives (and the causal mask a traced open_clip model keeps).
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
_SHOW = 5
WEIGHTS_HINT = (
    f"run `python -m viper_rs weights --download clip`, or {setting_hint('clip_checkpoint')} "
    f"(an open_clip state dict or OpenAI's ViT-B-16.pt); online, "
    f"{setting_hint('clip_pretrained', 'TAG')} (e.g. openai) to download it through open_clip"
)


class CheckpointError(ConfigError):
    """A weights file is unreadable or does not hold the expected tensors."""


# --------------------------------------------------------------------------- devices


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named torch device."""
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


# --------------------------------------------------------------------------- files


def checkpoint_fingerprint(path: Path) -> str:
    """Cheap stable id of a weights file: its size and a SHA-256 of its first and last MiB."""
    path = Path(path)
    try:
        size = path.stat().st_size
        h = hashlib.sha256(str(size).encode())
        with open(path, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 1 << 20:
                fh.seek(max(1 << 20, size - (1 << 20)))
                h.update(fh.read(1 << 20))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return f"{size:x}-{h.hexdigest()[:16]}"


def read_checkpoint(path: Path) -> Any:
    """The object in a ``torch.save`` or ``.safetensors`` file, loaded without running code."""
    path = require_file(Path(path), CheckpointError, "a checkpoint file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({_line(exc)})") from None
    is_zip = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if not is_zip or "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_line(exc)})") from None
        return _load_with_placeholders(path, exc)
    except Exception as exc:  # truncated zip, foreign bytes, wrong format: all unreadable
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_line(exc)})") from None


class _Opaque:
    """Inert stand-in for a pickled Python object that is not a tensor or a container."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _load_with_placeholders(path: Path, first: Exception) -> Any:
    """Load a zip checkpoint whose pickle references unknown classes, as inert placeholders.

    Objects the restricted unpickler fills like a dict (dict subclasses such as Lightning's
    ``AttributeDict``) become plain dicts, list-like ones lists; all others ``_Opaque``.
    """
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        names = []
    if not names:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_line(first)})")
    stand_in: dict[str, Any] = {
        n: type(f"_Opaque{i}", (_Opaque,), {"__module__": __name__}) for i, n in enumerate(names)
    }
    last: Exception = first
    for _ in range(2 * len(names) + 1):
        try:
            with torch.serialization.safe_globals([(obj, n) for n, obj in stand_in.items()]):
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            log.info("%s: replaced pickled objects %s by placeholders", path, ", ".join(names))
            return obj
        except pickle.UnpicklingError as exc:
            last = exc
            msg = str(exc)
            culprit = next((n for n, o in stand_in.items()
                            if isinstance(o, type) and issubclass(o, _Opaque) and str(o) in msg),
                           None)
            if culprit is None:
                break
            stand_in[culprit] = dict if "SETITEM" in msg else list if "append" in msg else None
            if stand_in[culprit] is None:
                break
        except Exception as exc:  # a placeholder did not fit the pickle's protocol
            last = exc
            break
    raise CheckpointError(
        f"{path}: checkpoint holds Python objects ({', '.join(names[:_SHOW])}) that cannot be "
        f"loaded safely ({_line(last)})"
    )


def _line(exc: BaseException) -> str:
    return first_line(exc)[:300]


def _state_dict_of(obj: Any, path: Path, what: str) -> dict[str, Any]:
    """The tensor dict of a checkpoint: ``obj["state_dict"]`` (Lightning) or ``obj``."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: not a {what} checkpoint (holds a {type(obj).__name__}, not a state dict)"
        )
    if not obj:
        raise CheckpointError(f"{path}: not a {what} checkpoint (the state dict is empty)")
    bad = [str(k) for k in obj if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{path}: state dict has non-string keys ({', '.join(bad[:_SHOW])})")
    return dict(obj)


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _show(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def check_state_keys(
    path: Path | str,
    what: str,
    state: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    ignored: tuple[str, ...] = (),
    scalar_ok: tuple[str, ...] = (),
    hint: str = "",
) -> None:
    """Raise CheckpointError listing missing, unexpected and wrongly shaped keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and k not in ignored]
    wrong = []
    for k, shape in expected.items():
        if k not in state:
            continue
        v = state[k]
        if not isinstance(v, torch.Tensor):
            wrong.append(f"{k} (a {type(v).__name__}, not a tensor)")
        elif k in scalar_ok and v.numel() == 1:
            continue
        elif tuple(v.shape) != tuple(shape):
            wrong.append(f"{k} (file {tuple(v.shape)}, model {tuple(shape)})")
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_show(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_show(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape(s): {_show(wrong)}")
    raise CheckpointError(f"{path}: not a {what} checkpoint: " + "; ".join(parts) + hint)


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Hide open_clip's root-logger warning about random initialisation (weights follow)."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


# --------------------------------------------------------------------------- GRAFT


def _graft_layout(state: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Normalise prefixes (``model.``/``module.`` wrappers); return state and vision prefix."""
    for wrapper in ("model.", "module."):
        if not any(k.startswith(BACKBONE) for k in state) and any(k.startswith(wrapper) for k in state):
            state = _strip_prefix(dict(state), wrapper)
    vision = VISION if any(k.startswith(VISION) for k in state) else BACKBONE
    return dict(state), vision


def _graft_config(state: Mapping[str, Any], base: GraftConfig | None) -> GraftConfig:
    base = base or GraftConfig()
    return GraftConfig(
        **{
            **base.__dict__,
            "visual_projection": VISUAL_PROJECTION in state,
            "projector_bias": "projector.1.bias" in state,
            "logit_scale": "logit_scale" in state,
        }
    )


def _graft_checkpoint_tensors(model: GraftPixelModel, vision: str = VISION) -> dict[str, Any]:
    """The model's tensors under their published checkpoint names (inverse of loading)."""
    sd = model.state_dict()
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    proj = visual.pop("proj", None)
    hf, leftover = open_clip_to_hf(visual)
    if leftover:  # pragma: no cover - the architecture is fixed
        raise ValueError(f"unmapped open_clip tensors: {leftover}")
    out: dict[str, Any] = {vision + k: v for k, v in hf.items()}
    if proj is not None:
        out[VISUAL_PROJECTION] = proj.t()
    for k, v in sd.items():
        if not k.startswith("visual."):
            out[k] = v
    return out


def load_graft_state(
    state: Mapping[str, Any],
    source: str | Path = "<state dict>",
    device: str | torch.device = "cpu",
    config: GraftConfig | None = None,
    model_id: str = "graft",
) -> GraftPixelModel:
    """Build a :class:`GraftPixelModel` from a published-layout state dict (strict)."""
    state, vision = _graft_layout(state)
    cfg = _graft_config(state, config)
    with torch.device("meta"):
        skeleton = GraftPixelModel(cfg, model_id=model_id)
    expected = {k: tuple(v.shape) for k, v in _graft_checkpoint_tensors(skeleton, vision).items()}
    hint = ""
    if any(k.startswith(("visual.", "transformer.resblocks")) for k in state):
        hint = (" (this looks like an open_clip CLIP checkpoint: give it as "
                f"{setting_source('clip_checkpoint')})")
    check_state_keys(source, "GRAFT", state, expected,
                ignored=tuple(vision + k for k in IGNORED_HF_KEYS),
                scalar_ok=("logit_scale",), hint=hint)
    nonfinite = [k for k in expected if state[k].is_floating_point()
                 and not bool(torch.isfinite(state[k]).all())]
    if nonfinite:
        raise CheckpointError(f"{source}: non-finite weights in {_show(nonfinite)}")

    def f32(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(torch.float32).clone()

    visual_hf = {k[len(vision):]: v for k, v in state.items()
                 if k.startswith(vision) and k != VISUAL_PROJECTION}
    visual, leftover = hf_to_open_clip(visual_hf)
    if leftover:  # pragma: no cover - check_state_keys already rejected these
        raise CheckpointError(f"{source}: cannot map {_show(leftover)}")
    tensors = {"visual." + k: f32(v) for k, v in visual.items()}
    if cfg.visual_projection:
        tensors["visual.proj"] = f32(state[VISUAL_PROJECTION]).t().contiguous()
    for k in expected:
        if not k.startswith(BACKBONE):
            tensors[k] = f32(state[k])
    if cfg.logit_scale:
        tensors["logit_scale"] = tensors["logit_scale"].reshape(())
    skeleton.load_state_dict(tensors, strict=True, assign=True)
    meta = [n for n, t in [*skeleton.named_parameters(), *skeleton.named_buffers()] if t.is_meta]
    if meta:  # pragma: no cover - strict loading covers every parameter
        raise CheckpointError(f"{source}: no weights for {_show(meta)}")
    for p in skeleton.parameters():
        p.requires_grad_(False)
    return skeleton.to(resolve_device(device)).eval()


def load_graft(
    checkpoint: Path,
    device: str | torch.device = "cpu",
    config: GraftConfig | None = None,
) -> GraftPixelModel:
    """Load a published GRAFT checkpoint (``.ckpt``, bare state dict or ``.safetensors``)."""
    path = Path(checkpoint)
    dev = resolve_device(device)
    state = _state_dict_of(read_checkpoint(path), path, "GRAFT")
    model_id = f"graft@{checkpoint_fingerprint(path)}"
    model = load_graft_state(state, path, dev, config, model_id=model_id)
    log.info("loaded GRAFT %s from %s on %s", model_id, path, dev)
    return model


def save_graft_checkpoint(model: GraftPixelModel, path: Path) -> Path:
    """Write ``model`` as a Lightning-style checkpoint in GRAFT's published layout."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").clone().contiguous()
               for k, v in _graft_checkpoint_tensors(model).items()}
    ckpt = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": tensors,
        "hyper_parameters": {"written_by": "viper_rs.save_graft_checkpoint",
                             "model_id": model.model_id},
    }
    return save_atomically(ckpt, path)


def save_atomically(obj: Any, path: Path) -> Path:
    """``torch.save(obj)`` to ``path`` whole or not at all (a temporary file in the same
    folder, readable as the umask allows, renamed into place); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --------------------------------------------------------------------------- CLIP


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _clip_from_torchscript(path: Path) -> torch.nn.Module:
    """OpenAI's TorchScript archive (e.g. ``ViT-B-16.pt``) -> an open_clip CLIP (QuickGELU)."""
    from open_clip.model import build_model_from_openai_state_dict

    try:
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": it is OpenAI's format
            warnings.simplefilter("ignore", FutureWarning)
            archive = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # corrupt archive
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({_line(exc)})") from None
    state = {k: v for k, v in archive.state_dict().items() if k not in _OPENAI_EXTRA_KEYS}
    del archive
    try:
        model = build_model_from_openai_state_dict(dict(state), quick_gelu=True, cast_dtype=None)
    except (KeyError, RuntimeError, AssertionError, IndexError) as exc:
        raise CheckpointError(
            f"{path}: a TorchScript archive but not an OpenAI CLIP model ({_line(exc)})"
        ) from None
    model = model.float()
    # build_model_from_openai_state_dict rounds through float16; reload the exact weights.
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model


def _clip_from_state_dict(model_name: str, path: Path) -> torch.nn.Module:
    import open_clip

    state = _state_dict_of(read_checkpoint(path), path, "CLIP")
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            state = _strip_prefix(state, prefix)
    for k in _OPENAI_EXTRA_KEYS:
        state.pop(k, None)

    def create(device: str) -> torch.nn.Module:
        try:
            with _quiet_open_clip(), torch.device(device):
                return open_clip.create_model(model_name, pretrained=None, pretrained_text=False,
                                              device=device)
        except RuntimeError as exc:
            raise ConfigError(f"unknown open_clip model {model_name!r} ({_line(exc)})") from None

    # Check names and shapes on a weightless skeleton first: a wrong file fails fast.
    expected = {k: tuple(v.shape) for k, v in create("meta").state_dict().items()}
    hint = ""
    if any(k.startswith(BACKBONE) for k in state):
        hint = f" (this looks like a GRAFT checkpoint: give it as {setting_source('graft_checkpoint')})"
    check_state_keys(path, f"{model_name} CLIP", state, expected,
                scalar_ok=("logit_scale", "logit_bias"), hint=hint)
    for k in ("logit_scale", "logit_bias"):
        if k in state and k in expected:
            state[k] = state[k].reshape(expected[k])
    model = create("cpu")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model


def load_clip(
    model_name: str = "ViT-B-16",
    checkpoint: Path | None = None,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, Any, str]:
    """An open_clip CLIP model (eval), its tokenizer and a model id.

    ``checkpoint`` may be an open_clip state dict (``.pt``/``.pth``/``.bin``/
    ``.safetensors``, optionally wrapped in ``{"state_dict": ...}``) for ``model_name``, or
    OpenAI's TorchScript archive, whose architecture (QuickGELU) is read from the archive.
    Note that OpenAI weights in a plain state dict need a ``*-quickgelu`` model name.
    ``pretrained`` (an open_clip tag, downloaded) is used only without a checkpoint.
    """
    import open_clip

    dev = resolve_device(device)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            read_checkpoint(path)  # raises the precise error (missing, directory)
        if _is_torchscript(path):
            model = _clip_from_torchscript(path)
        else:
            model = _clip_from_state_dict(model_name, path)
        model_id = f"{model_name}@{checkpoint_fingerprint(path)}"
    elif pretrained:
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained)
        except Exception as exc:  # no network, unknown tag, bad download
            raise ConfigError(
                f"cannot load open_clip {model_name!r} pretrained={pretrained!r} "
                f"({_line(exc)}); offline, {WEIGHTS_HINT}"
            ) from None
        model_id = f"{model_name}:{pretrained}"
    else:
        raise ConfigError(f"no CLIP weights configured for {model_name}: {WEIGHTS_HINT}")
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # hf-hub tokenizers need a download
        raise ConfigError(f"no tokenizer for open_clip model {model_name!r} ({_line(exc)})") from None
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.to(dev).eval()
    log.info("loaded CLIP %s on %s", model_id, dev)
    return model, tokenizer, model_id


# --------------------------------------------------------------------------- image towers

#: The image towers :func:`load_image_tower` loads.
IMAGE_TOWERS = ("graft", "clip")
#: What :func:`load_clip` returns: the model, its tokenizer and its model id.
ClipModel = tuple[torch.nn.Module, Any, str]
NO_GRAFT_CHECKPOINT = (
    f"the graft image tower needs a GRAFT checkpoint: {setting_hint('graft_checkpoint')} "
    "(docs/weights.md says where to get it)"
)


def load_settings_clip(settings: Settings, device: str | torch.device = "cpu") -> ClipModel:
    """:func:`load_clip` for the CLIP model, checkpoint and pretrained tag of ``settings``."""
    return load_clip(settings.clip_model, settings.clip_checkpoint, settings.clip_pretrained,
                     device)


def graft_checkpoint(settings: Settings) -> Path:
    """The configured GRAFT checkpoint; ConfigError saying how to set one when there is none."""
    if settings.graft_checkpoint is None:
        raise ConfigError(NO_GRAFT_CHECKPOINT)
    return Path(settings.graft_checkpoint)


def load_image_tower(
    name: str,
    settings: Settings,
    device: str | torch.device = "cpu",
    clip: ClipModel | None = None,
    dense: bool = True,
) -> Any:
    """The image tower ``name`` (``graft`` or ``clip``) with the weights of ``settings``.

    ``graft`` gives the :class:`GraftPixelModel` (patch and, with a projection, image-level
    embeddings). ``clip`` gives CLIP's dense patch encoder
    (:class:`~viper_rs.vision.modeling.clip_dense.ClipDenseEncoder`), or with
    ``dense=False`` the open_clip model itself (``encode_image``); ``clip`` reuses an
    already loaded CLIP model instead of loading the configured one.
    """
    if name not in IMAGE_TOWERS:
        raise ConfigError(f"unknown image tower {name!r}; choose one of {', '.join(IMAGE_TOWERS)}")
    if name == "graft":
        return load_graft(graft_checkpoint(settings), device)
    model, _, clip_id = clip if clip is not None else load_settings_clip(settings, device)
    if not dense:
        return model
    from viper_rs.vision.modeling.clip_dense import ClipDenseEncoder

    return ClipDenseEncoder(model, clip_id)
