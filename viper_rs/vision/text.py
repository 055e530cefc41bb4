"""Text embeddings from an open_clip text tower, cached per string."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from viper_rs.core.lru import LRU
from viper_rs.vision.build import resolve_device
from viper_rs.vision.cache import FeatureCache, cache_key

log = logging.getLogger(__name__)

CACHE_KIND = "text"
#: Strings kept in the in-memory cache.
MEMORY_ITEMS = 4096
#: Strings per text-tower forward pass.
BATCH = 64


class TextEncoder:
    """``encode(texts)`` -> (N, D) float32 unit vectors, each string computed once.

    Strings are looked up in memory, then in the shared :class:`FeatureCache` (kind
    ``"text"``, keyed by model id and string), and only the rest go through the model.
    """

    def __init__(self, model: Any, tokenizer: Any, model_id: str,
                 device: str | torch.device = "cpu", cache: FeatureCache | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = resolve_device(device)
        self.cache = cache
        self._mem: LRU[str, np.ndarray] = LRU(MEMORY_ITEMS)
        self.last_stats: dict[str, Any] = {}

    def _key(self, text: str) -> str:
        return cache_key(self.model_id, text)

    def _lookup(self, text: str) -> np.ndarray | None:
        v = self._mem.get(text)
        if v is not None:
            return v
        if self.cache is not None:
            hit = self.cache.get(CACHE_KIND, self._key(text))
            if hit is not None and "embedding" in hit:
                v = hit["embedding"].astype(np.float32, copy=False)
                self._remember(text, v)
                return v
        return None

    def _remember(self, text: str, v: np.ndarray) -> None:
        self._mem.put(text, v)

    def _compute(self, texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), BATCH):
                tokens = self.tokenizer(texts[i:i + BATCH]).to(self.device)
                feats = self.model.encode_text(tokens).float()
                out.append(F.normalize(feats, dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), D) float32 L2-normalised text embeddings."""
        t0 = time.perf_counter()
        texts = [str(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        todo: list[str] = []
        for t in dict.fromkeys(texts):
            v = self._lookup(t)
            if v is None:
                todo.append(t)
            else:
                found[t] = v
        if todo:
            new = self._compute(todo)
            for t, v in zip(todo, new, strict=True):
                v = np.ascontiguousarray(v)
                found[t] = v
                self._remember(t, v)
                if self.cache is not None:
                    self.cache.put(CACHE_KIND, self._key(t), {"embedding": v})
        computed = set(todo)
        if texts:
            result = np.stack([found[t] for t in texts]).astype(np.float32, copy=False)
        else:
            result = np.zeros((0, self.dim), dtype=np.float32)
        self.last_stats = {
            "ms": (time.perf_counter() - t0) * 1000,
            "cached": sum(t not in computed for t in texts),
            "computed": len(todo),
        }
        return result

    @property
    def dim(self) -> int:
        """Embedding size."""
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        if isinstance(proj, torch.nn.Linear):
            return int(proj.out_features)
        return int(getattr(self.model, "embed_dim", 0) or 512)
