"""SAM refinement of detected components: point prompts -> sharper masks.

The SAM image embedding is the expensive part (the ViT image encoder at 1024 x 1024); it is
computed once per image and kept in a :class:`~viper_rs.vision.cache.FeatureCache` (kind
``"sam-embedding"``) so later questions on the same image, and later processes with a disk
cache, only run the light prompt encoder and mask decoder.

Refinement rules (constants below):

* Components are refined in priority order: total score inside the component when a score
  map is given (area weighted by confidence), else area; at most ``settings.sam_max_regions``
  are refined, the rest are kept as they are.
* Prompts: the given points (x=col, y=row, integer pixel indices; the pixel centre is used)
  as foreground clicks; a component without points gets its most interior pixel.
* Mask choice: of SAM's three masks, the one maximising ``IoU(mask, component) x quality``
  (SAM's predicted IoU clipped to 0..1) among those that pass acceptance. Parts of a mask
  not touching the component are dropped first.
* Acceptance: ``IoU >= MIN_IOU`` and ``area <= MAX_GROWTH x component area``; otherwise the
  component is kept unchanged (SAM on a point can return the whole image or nothing).
* Overlaps: pixels of kept (unrefined) components stay theirs; among refined masks the
  higher-priority component wins a contested pixel. A refined component whose mask lies
  entirely on pixels already claimed disappears (counted as ``absorbed``): the
  higher-priority mask already covers the same object. Only ``image.answer_mask`` pixels
  (valid and inside the region of interest) are labelled.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from viper_rs.core import budget
from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, InputError, first_line
from viper_rs.core.files import require_file
from viper_rs.core.geo import GeoImage
from viper_rs.core.timing import ms_since
from viper_rs.vision.build import checkpoint_fingerprint, resolve_device
from viper_rs.vision.cache import FeatureCache, cache_key

log = logging.getLogger(__name__)

#: Minimum IoU between SAM's mask and the component for the mask to replace it.
MIN_IOU = 0.3
#: A SAM mask larger than this many times the component's area is rejected.
MAX_GROWTH = 3.0
#: Prompts decoded together (on CPU batching saves little; memory grows with it).
PROMPT_BATCH = 8

_TYPES_BY_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_TYPES_BY_DEPTH = {12: "vit_b", 24: "vit_l", 32: "vit_h"}
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"
_BLOCK_PREFIX = "image_encoder.blocks."
_CACHE_KIND = "sam-embedding"


# ---------------------------------------------------------------------- loading
def sam_model_type(state_dict: Mapping[str, Any]) -> str:
    """``"vit_b"``, ``"vit_l"`` or ``"vit_h"``, read from a SAM state dict's encoder tensors."""
    width = depth = None
    blocks: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            continue
        if key == _PATCH_KEY and hasattr(value, "shape") and len(value.shape) >= 1:
            width = int(value.shape[0])
        elif key.startswith(_BLOCK_PREFIX):
            idx = key[len(_BLOCK_PREFIX):].split(".", 1)[0]
            if idx.isdigit():
                blocks.add(int(idx))
    if blocks:
        depth = max(blocks) + 1
    if width is None and depth is None:
        sample = ", ".join(sorted(str(k) for k in state_dict)[:5]) or "no keys"
        raise ConfigError(
            f"not a SAM checkpoint: no {_PATCH_KEY} and no {_BLOCK_PREFIX}* tensors "
            f"(found {len(state_dict)} entries: {sample})"
        )
    by_width = _TYPES_BY_WIDTH.get(width) if width is not None else None
    by_depth = _TYPES_BY_DEPTH.get(depth) if depth is not None else None
    if width is not None and by_width is None:
        raise ConfigError(
            f"unknown SAM image encoder: patch embedding width {width} "
            f"(expected 768 vit_b, 1024 vit_l or 1280 vit_h)"
        )
    if width is None and by_depth is None:
        raise ConfigError(
            f"unknown SAM image encoder: {depth} blocks and no patch embedding "
            f"(expected 12 vit_b, 24 vit_l or 32 vit_h)"
        )
    if by_width is not None and depth is not None and by_depth != by_width:
        raise ConfigError(
            f"inconsistent SAM image encoder: patch embedding width {width} ({by_width}) "
            f"but {depth} blocks"
        )
    return by_width or by_depth  # type: ignore[return-value]


def _read_state_dict(path: Path) -> Mapping[str, Any]:
    """The checkpoint's tensors on CPU (memory-mapped when the format allows it)."""
    require_file(path, ConfigError, "a checkpoint file", name=f"SAM checkpoint {path}")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc).lower():
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:  # torch raises many types on corrupt or foreign files
        text = str(exc)
        detail = next((ln.strip() for ln in text.splitlines() if "WeightsUnpickler" in ln),
                      first_line(exc))
        if "Unsupported global" in detail:
            found = re.search(r"GLOBAL (\S+)", detail)
            raise ConfigError(
                f"SAM checkpoint {path}: holds Python objects besides tensors "
                f"({found.group(1) if found else 'unknown'}), which are not loaded without "
                f"running their pickle code; re-save it as a plain state dict of tensors"
            ) from None
        raise ConfigError(
            f"SAM checkpoint {path}: not a readable torch checkpoint "
            f"({type(exc).__name__}: {detail})"
        ) from None
    if not isinstance(obj, Mapping):
        raise ConfigError(
            f"SAM checkpoint {path}: holds a {type(obj).__name__}, not a state dict"
        )
    if obj and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(
            f"SAM checkpoint {path}: not a flat state dict of tensors "
            f"(top-level keys: {', '.join(map(str, list(obj)[:8]))})"
        )
    return obj


def build_sam(checkpoint: Path | str, device: str | torch.device = "cpu") -> tuple[Any, str]:
    """Build segment-anything's ``Sam`` from a checkpoint (type detected) on ``device``."""
    from segment_anything import sam_model_registry

    path = Path(checkpoint)
    state = _read_state_dict(path)
    model_type = sam_model_type(state)
    keys = {k for k in state if isinstance(k, str)}
    del state  # drop the memory map before the registry reads the file itself
    try:
        try:
            sam = sam_model_registry[model_type](checkpoint=str(path))
        except RuntimeError as exc:
            if "deserialize object on a CUDA device" not in str(exc):
                raise
            # saved from CUDA tensors and read without CUDA: the registry has no map_location
            sam = sam_model_registry[model_type]()
            sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise _load_error(path, model_type, keys, exc) from None
    except Exception as exc:
        raise ConfigError(
            f"SAM checkpoint {path}: segment-anything could not load it as {model_type} "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    sam.to(resolve_device(device))
    sam.eval()
    return sam, model_type


def _load_error(path: Path, model_type: str, keys: set[str], exc: Exception) -> ConfigError:
    """A ConfigError naming the missing/unexpected keys of a strict load failure."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # key names only: no memory, no init cost
        expected = set(sam_model_registry[model_type]().state_dict())
    missing, unexpected = sorted(expected - keys), sorted(keys - expected)
    if not missing and not unexpected:
        return ConfigError(
            f"SAM checkpoint {path}: does not fit segment-anything {model_type} "
            f"({first_line(exc)})"
        )
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
    return ConfigError(
        f"SAM checkpoint {path}: does not fit segment-anything {model_type}: "
        + "; ".join(parts)
    )


def _some(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


# ---------------------------------------------------------------------- refiner
class SamRefiner:
    """Refines component label images with SAM point prompts; one embedding per image."""

    def __init__(
        self,
        checkpoint: Path | str,
        settings: Settings | None = None,
        cache: FeatureCache | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        from segment_anything import SamPredictor

        self.settings = settings or Settings()
        self.device = resolve_device(device if device is not None else self.settings.device)
        path = Path(checkpoint)
        self.sam, self.model_type = build_sam(path, self.device)
        self.model_id = f"sam-{self.model_type}-{checkpoint_fingerprint(path)}"
        self.predictor = SamPredictor(self.sam)
        self.cache = cache if cache is not None else FeatureCache(
            None, self.settings.memory_cache_items)
        self._current: str | None = None  # cache key of the image set in the predictor
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ embedding
    def set_image(self, image: GeoImage) -> dict[str, Any]:
        """Make ``image`` current; its embedding is computed only if no cache holds it."""
        t0 = time.perf_counter()
        key = cache_key(image.content_hash, self.model_id)
        with self._lock:
            if self._current == key:
                return {"ms": ms_since(t0), "cached": True}
            entry = self.cache.get(_CACHE_KIND, key)
            if entry is not None and self._restore(image, entry):
                self._current = key
                return {"ms": ms_since(t0), "cached": True}
            self._current = None
            with torch.inference_mode():
                self.predictor.set_image(image.rgb_uint8(), image_format="RGB")
            p = self.predictor
            self.cache.put(_CACHE_KIND, key, {
                "features": p.features.detach().float().cpu().numpy(),
                "original_size": np.asarray(p.original_size, dtype=np.int64),
                "input_size": np.asarray(p.input_size, dtype=np.int64),
            })
            self._current = key
            ms = ms_since(t0)
            log.info("SAM %s embedding of %s (%dx%d) in %.0f ms", self.model_type, image.name,
                     image.height, image.width, ms)
            return {"ms": ms, "cached": False}

    def _restore(self, image: GeoImage, entry: dict[str, np.ndarray]) -> bool:
        """Put a cached embedding into the predictor; False when the entry does not fit."""
        p = self.predictor
        try:
            feats = entry["features"]
            original = tuple(int(v) for v in entry["original_size"])
            input_size = tuple(int(v) for v in entry["input_size"])
        except (KeyError, TypeError, ValueError):
            return False
        size = p.model.image_encoder.img_size
        expected_input = p.transform.get_preprocess_shape(image.height, image.width, size)
        if original != image.shape or input_size != tuple(expected_input) or feats.ndim != 4:
            log.warning("ignoring a SAM embedding cache entry that does not fit %s", image.name)
            return False
        p.reset_image()
        p.features = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).to(
            self.device)
        p.original_size = original
        p.input_size = input_size
        p.is_image_set = True
        return True

    # ------------------------------------------------------------------ refinement
    def refine(
        self,
        image: GeoImage,
        labels: np.ndarray,
        points: Mapping[int, np.ndarray],
        scores: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new int32 label image where accepted SAM masks replace their components."""
        t0 = time.perf_counter()
        labels = np.asarray(labels)
        if labels.shape != image.shape:
            raise InputError(f"labels shape {labels.shape} != image shape {image.shape}")
        if scores is not None and np.shape(scores) != image.shape:
            raise InputError(f"scores shape {np.shape(scores)} != image shape {image.shape}")
        valid = np.asarray(image.answer_mask, dtype=bool)
        lab = np.where(valid & (labels > 0), labels, 0).astype(np.int32)
        areas = np.bincount(lab.ravel())
        ids = np.nonzero(areas)[0]
        ids = ids[ids > 0]
        stats: dict[str, Any] = {"ms": 0.0, "regions": int(len(ids)), "refined": 0,
                                 "kept": 0, "absorbed": 0, "embedding_ms": 0.0,
                                 "embedding_cached": False}
        if len(ids) == 0:
            stats["ms"] = ms_since(t0)
            return lab, stats

        if scores is not None:
            weight = np.nan_to_num(np.asarray(scores, dtype=np.float64)).clip(0)
            priority = np.bincount(lab.ravel(), weights=weight.ravel(), minlength=len(areas))
        else:
            priority = areas.astype(np.float64)
        # highest priority first; ties by area, then by id for determinism
        order = sorted(ids.tolist(), key=lambda i: (-priority[i], -areas[i], i))
        todo = order[: max(0, int(self.settings.sam_max_regions))]
        slices = ndimage.find_objects(lab)

        with self._lock:
            emb = self.set_image(image)
            stats["embedding_ms"], stats["embedding_cached"] = emb["ms"], emb["cached"]
            accepted: dict[int, tuple[tuple[slice, slice], np.ndarray]] = {}
            with torch.inference_mode():
                for start in range(0, len(todo), PROMPT_BATCH):
                    budget.check()
                    batch = todo[start:start + PROMPT_BATCH]
                    prompts = [self._prompt(lab, slices[i - 1], i, points.get(i)) for i in batch]
                    low_res, quality = self._decode(prompts)
                    for j, comp in enumerate(batch):
                        got = self._choose(lab, valid, comp, slices[comp - 1], low_res[j],
                                           quality[j])
                        if got is not None:
                            accepted[comp] = got

        out = np.zeros_like(lab)
        kept = [i for i in order if i not in accepted]
        keep_mask = np.isin(lab, kept)
        out[keep_mask] = lab[keep_mask]
        for comp in order:  # priority order: the first refined mask claims a pixel
            if comp not in accepted:
                continue
            win, mask = accepted[comp]
            sub = out[win]
            free = mask & (sub == 0)
            sub[free] = comp
            if not free.any():
                stats["absorbed"] += 1
        out[~valid] = 0
        stats["refined"], stats["kept"] = len(accepted), len(kept)
        stats["ms"] = ms_since(t0)
        return out, stats

    def _prompt(self, lab: np.ndarray, sl: tuple[slice, slice], comp: int,
                pts: np.ndarray | None) -> np.ndarray:
        """(k, 2) prompt coordinates (x, y) in the model's input frame."""
        h, w = lab.shape
        if pts is not None:
            pts = np.asarray(pts, dtype=np.float64)
            if pts.size and (pts.ndim != 2 or pts.shape[1] != 2):
                raise InputError(f"points for component {comp} must be (k, 2) x,y; "
                                 f"got shape {pts.shape}")
            pts = pts[np.isfinite(pts).all(axis=1)] if pts.size else pts.reshape(0, 2)
        if pts is None or len(pts) == 0:
            crop = lab[sl] == comp
            dist = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
            r, c = np.unravel_index(int(np.argmax(dist)), crop.shape)
            pts = np.array([[c + sl[1].start, r + sl[0].start]], dtype=np.float64)
        pts = pts.copy()
        pts[:, 0] = pts[:, 0].clip(0, w - 1)
        pts[:, 1] = pts[:, 1].clip(0, h - 1)
        in_h, in_w = self.predictor.input_size
        # pixel index -> input-frame index whose centre (SAM adds 0.5) is this pixel's centre
        pts[:, 0] = (pts[:, 0] + 0.5) * (in_w / w) - 0.5
        pts[:, 1] = (pts[:, 1] + 0.5) * (in_h / h) - 0.5
        return pts

    def _decode(self, prompts: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits (B, 3, 256, 256) and predicted quality (B, 3)."""
        k = max(len(p) for p in prompts)
        coords = np.zeros((len(prompts), k, 2), dtype=np.float32)
        kinds = -np.ones((len(prompts), k), dtype=np.int64)  # -1 = padding, as SAM pads
        for i, p in enumerate(prompts):
            coords[i, : len(p)] = p
            kinds[i, : len(p)] = 1
        model = self.sam
        sparse, dense = model.prompt_encoder(
            points=(torch.as_tensor(coords, device=self.device),
                    torch.as_tensor(kinds, device=self.device)),
            boxes=None, masks=None)
        low_res, quality = model.mask_decoder(
            image_embeddings=self.predictor.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        return low_res, quality

    def _choose(
        self,
        lab: np.ndarray,
        valid: np.ndarray,
        comp: int,
        sl: tuple[slice, slice],
        low_res: torch.Tensor,
        quality: torch.Tensor,
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """The accepted mask (window, boolean mask in the window) for one component, or None.

        Masks are upsampled like segment-anything's ``postprocess_masks`` but only inside a
        window around the component and the candidate masks, so large images stay cheap.
        """
        h, w = lab.shape
        in_h, in_w = self.predictor.input_size
        size = self.sam.image_encoder.img_size
        thr = float(self.sam.mask_threshold)
        logits = F.interpolate(low_res[None].float(), (size, size), mode="bilinear",
                               align_corners=False)[0, :, :in_h, :in_w]
        comp_area = int(np.count_nonzero(lab[sl] == comp))
        px_per_input = (h * w) / float(in_h * in_w)
        positive = logits > thr
        counts = positive.flatten(1).sum(1).cpu().numpy() * px_per_input
        # generous pre-filter in the input frame; the exact test follows at full resolution
        cands = [j for j in range(3)
                 if 0 < counts[j] <= MAX_GROWTH * comp_area * 1.5 + 4 * px_per_input]
        if not cands:
            return None
        r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        for j in cands:
            rows = torch.nonzero(positive[j].any(1)).flatten()
            cols = torch.nonzero(positive[j].any(0)).flatten()
            a, b = int(rows[0]), int(rows[-1]) + 1
            r0 = min(r0, max(0, int(np.floor((a - 0.5) * h / in_h - 0.5))))
            r1 = max(r1, min(h, int(np.ceil((b + 0.5) * h / in_h))))
            a, b = int(cols[0]), int(cols[-1]) + 1
            c0 = min(c0, max(0, int(np.floor((a - 0.5) * w / in_w - 0.5))))
            c1 = max(c1, min(w, int(np.ceil((b + 0.5) * w / in_w))))
        win = (slice(r0, r1), slice(c0, c1))
        # original pixel centres in normalised coordinates (align_corners=False convention)
        ys = (torch.arange(r0, r1, dtype=torch.float32, device=logits.device) + 0.5) / h * 2 - 1
        xs = (torch.arange(c0, c1, dtype=torch.float32, device=logits.device) + 0.5) / w * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
        sel = logits[cands][:, None]  # (n, 1, in_h, in_w)
        up = F.grid_sample(sel, grid.expand(len(cands), -1, -1, -1), mode="bilinear",
                           padding_mode="border", align_corners=False)[:, 0]
        masks = (up > thr).cpu().numpy() & valid[win]
        target = lab[win] == comp
        q = quality.float().clamp(0, 1).cpu().numpy()
        best, best_score = None, -1.0
        for n, j in enumerate(cands):
            m = _touching(masks[n], target, self.settings.connectivity)
            area = int(np.count_nonzero(m))
            if area == 0 or area > MAX_GROWTH * comp_area:
                continue
            inter = int(np.count_nonzero(m & target))
            iou = inter / float(area + comp_area - inter)
            if iou < MIN_IOU:
                continue
            score = iou * float(q[j])
            if score > best_score:
                best, best_score = m, score
        return None if best is None else (win, best)


def _touching(mask: np.ndarray, target: np.ndarray, connectivity: int) -> np.ndarray:
    """The connected parts of ``mask`` that overlap ``target``."""
    if not mask.any():
        return mask
    parts, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(
        2, 2 if connectivity == 2 else 1))
    if n <= 1:
        return mask if (mask & target).any() else np.zeros_like(mask)
    keep = np.unique(parts[target & mask])
    keep = keep[keep > 0]
    return np.isin(parts, keep)
