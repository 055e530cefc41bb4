"""Chip embedders: one vector per chip, and a query vector scored against it by dot product.

* ``graft``: GRAFT's image-level embedding (CLS -> ``ln_post`` -> ``visual_projection``)
  when the checkpoint has the projection, else the mean of its unit patch embeddings;
  queries go through CLIP's text tower (prompt templates averaged).
* ``clip``: any open_clip model's ``encode_image``; same text side.
* ``spectral`` (no weights): the fraction of the chip covered by each class the spectral
  detector measures; a query resolves to its class and scores the chip by that fraction,
  so the offline index still ranks by every supported concept.

``auto`` picks GRAFT, then CLIP, when their weights are configured or downloaded, else
spectral (the same rule as the detector factory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from viper_rs.core.classes import BY_NAME, INDEX_DIMENSIONS
from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError
from viper_rs.core.geo import GeoImage

if TYPE_CHECKING:
    from viper_rs.vision.spectral import SpectralDetector

log = logging.getLogger(__name__)

EMBEDDER_NAMES = ("auto", "spectral", "clip", "graft")
#: The spectral embedding's dimensions: fractions of the chip's valid pixels (the concept
#: table's index dimensions; a union class such as vegetation scores its parts).
SPECTRAL_CLASSES = INDEX_DIMENSIONS
#: Spectral embedding format version (part of the model id: a change re-indexes).
_SPECTRAL_VERSION = 1


@dataclass(frozen=True)
class EmbedderSpec:
    """A picklable recipe for an embedder (sent to worker processes and Ray actors)."""

    name: str = "auto"
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, settings: Settings | None = None) -> EmbedderSpec:
        """Spec for ``name`` with ``settings`` (secrets are not carried)."""
        settings = settings or Settings()
        return cls((name or "auto").lower(), settings.model_dump(mode="json"))

    def build(self) -> Any:
        """The embedder (loads weights)."""
        return build_chip_embedder(self.name, Settings(**self.settings))


def resolve_name(name: str, settings: Settings) -> tuple[str, Settings]:
    """The concrete embedder for ``name`` (``auto`` -> graft/clip/spectral) and settings
    with cached weights filled in."""
    from viper_rs.core.weights import auto_detector, resolve_settings

    name = (name or "auto").lower()
    if name not in EMBEDDER_NAMES:
        raise ConfigError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDER_NAMES)}")
    if name == "spectral":
        return name, settings
    settings = resolve_settings(settings)
    if name == "auto":
        name = auto_detector(settings)
        if name not in ("graft", "clip"):
            name = "spectral"
    return name, settings


def build_chip_embedder(name: str = "auto", settings: Settings | None = None) -> Any:
    """Create a chip embedder by name (see the module docstring)."""
    name, settings = resolve_name(name, settings or Settings())
    if name == "spectral":
        return SpectralChipEmbedder()
    return TowerChipEmbedder(name, settings)


class SpectralChipEmbedder:
    """Class fractions from the weight-free spectral detector's class maps.

    ``detector`` (a :class:`~viper_rs.vision.spectral.SpectralDetector` with default
    thresholds, made when not given) computes and caches the maps, so the chip attributes
    (:mod:`viper_rs.index.attributes`) measured with the same detector reuse them."""

    name = "spectral"
    model_id = f"spectral-fractions-v{_SPECTRAL_VERSION}"
    dim = len(SPECTRAL_CLASSES)
    dimensions: tuple[str, ...] | None = SPECTRAL_CLASSES

    def __init__(self, detector: SpectralDetector | None = None) -> None:
        from viper_rs.vision.spectral import SpectralDetector

        self.detector: SpectralDetector = (
            detector if detector is not None else SpectralDetector())

    def embed(self, images: list[GeoImage]) -> np.ndarray:
        """(N, 9) class fractions of each image's valid pixels."""
        from viper_rs.vision.spectral import NODATA

        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, image in enumerate(images):
            maps = self.detector.class_maps(image)
            valid = maps.cover != NODATA
            n = max(int(valid.sum()), 1)
            for j, cls in enumerate(SPECTRAL_CLASSES):
                out[i, j] = float((maps.mask(cls) & valid).sum()) / n
        return out

    def embed_text(self, query: str) -> tuple[np.ndarray, list[str]]:
        """Weights over the dimensions: 1 on the query's class (or classes); its notes."""
        from viper_rs.vision.concepts import resolve_concept

        cls, notes = resolve_concept(query)
        parts = BY_NAME[cls].parts or (cls,)
        if not all(p in SPECTRAL_CLASSES for p in parts):  # pragma: no cover - vocabulary guard
            raise ConfigError(f"the spectral index has no dimension for {cls!r}")
        v = np.zeros(self.dim, dtype=np.float32)
        for p in parts:
            v[SPECTRAL_CLASSES.index(p)] = 1.0
        notes = [*notes, f"score = fraction of the chip covered by {cls.replace('_', ' ')} "
                 "(spectral index)"]
        return v, notes


class TowerChipEmbedder:
    """Image-level embeddings from GRAFT or an open_clip CLIP; CLIP text for queries."""

    dimensions: tuple[str, ...] | None = None
    #: No detector whose per-chip work the chip attributes could share.
    detector: SpectralDetector | None = None

    def __init__(self, name: str, settings: Settings) -> None:
        from viper_rs.vision.build import load_image_tower, load_settings_clip, resolve_device

        self.name = name
        self.settings = settings
        self.device = resolve_device(settings.device)
        self._text: Any = None
        self._clip = load_settings_clip(settings, self.device) if name == "clip" else None
        self.model: Any = load_image_tower(name, settings, self.device, clip=self._clip,
                                           dense=False)
        if name == "graft":
            self.size = int(self.model.window)
            pooled = self.model.visual.proj is not None
            self.pooling = "cls" if pooled else "patch-mean"
            self.model_id = f"{self.model.model_id}/{self.pooling}"
            self.dim = int(self.model.embed_dim)
            self.mean, self.std = self.model.mean, self.model.std
        else:
            clip, _, clip_id = self._clip
            visual = clip.visual
            size = visual.image_size
            self.size = int(size[0] if isinstance(size, tuple | list) else size)
            self.pooling = "encode_image"
            self.model_id = f"{clip_id}/image"
            self.dim = int(getattr(clip, "embed_dim", 0) or visual.output_dim)
            from viper_rs.vision.modeling.clip_dense import CLIP_MEAN, CLIP_STD

            self.mean = tuple(getattr(visual, "image_mean", None) or CLIP_MEAN)
            self.std = tuple(getattr(visual, "image_std", None) or CLIP_STD)

    def _batch(self, images: list[GeoImage]) -> Any:
        import torch
        import torch.nn.functional as F

        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        out = []
        for image in images:
            rgb = np.stack([image.band(r) for r in ("R", "G", "B")]).clip(0, 1)
            rgb = np.where(image.valid[None], rgb, mean)
            x = torch.from_numpy(np.ascontiguousarray((rgb - mean) / std, dtype=np.float32))
            small = max(x.shape[1:]) > self.size
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=small)[0]
            out.append(x)
        return torch.stack(out).to(self.device)

    def embed(self, images: list[GeoImage]) -> np.ndarray:
        """(N, D) unit image-level embeddings."""
        import torch
        import torch.nn.functional as F

        if not images:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            x = self._batch(images)
            if self.name == "clip":
                v = self.model.encode_image(x)
            elif self.pooling == "cls":
                v = self.model.encode_image(x)
            else:
                v = self.model.encode(x).mean(dim=(1, 2))
            v = F.normalize(v.float(), dim=-1)
        return v.cpu().numpy().astype(np.float32)

    def embed_text(self, query: str) -> tuple[np.ndarray, list[str]]:
        """Unit text embedding of ``query`` (mean over the calibration templates)."""
        from viper_rs.vision.calibration import Calibration

        if self._text is None:
            from viper_rs.vision.build import load_settings_clip
            from viper_rs.vision.text import TextEncoder

            clip = self._clip or load_settings_clip(self.settings, self.device)
            self._text = TextEncoder(*clip, self.device)
        text = " ".join(str(query).split())
        if not text:
            raise ConfigError("the query is empty")
        templates = Calibration.load(self.settings.calibration_file).templates
        v = self._text.encode([t.format(text) for t in templates]).mean(axis=0)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        if v.shape[0] != self.dim:
            raise ConfigError(
                f"text embeddings have {v.shape[0]} dimensions but the image tower gives "
                f"{self.dim}; use the CLIP model GRAFT was trained with (--clip-model)"
            )
        return v.astype(np.float32), []
