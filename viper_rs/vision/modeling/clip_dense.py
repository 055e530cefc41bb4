"""Dense (per-patch) image embeddings from any open_clip ViT, in the joint text space.

Two ways of reading patch features out of a CLIP ViT:

* ``"maskclip"`` (default): the last residual block is replaced by its value path only,
  ``out_proj(V(ln_1(x)))`` without the query-key attention, the residual and the MLP, then
  ``ln_post`` and ``proj``. The query-key attention of CLIP's last block mixes every patch
  with a few global "register" tokens, so plain last-layer patch tokens hardly localise;
  the value path keeps each token about its own location while staying in the space the
  projection was trained for (MaskCLIP, Zhou et al. 2022; ClearCLIP, Lan et al. 2024 show
  dropping the residual and MLP as well helps). It is the better zero-shot segmenter.
* ``"tokens"``: the ordinary output patch tokens through ``ln_post`` and ``proj``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from viper_rs.core.errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DENSE_MODES = ("maskclip", "tokens")


class ClipDenseEncoder:
    """``encode``: (B, 3, S, S) normalised images -> (B, S/p, S/p, D) unit patch embeddings.

    ``mode`` defaults to ``"maskclip"`` because plain CLIP patch tokens barely localise
    (see the module docstring); ``"tokens"`` gives the unmodified last-layer tokens.
    """

    def __init__(self, model: nn.Module, model_id: str, mode: str = "maskclip") -> None:
        visual = getattr(model, "visual", model)
        needed = ("conv1", "class_embedding", "positional_embedding", "transformer", "ln_post")
        if not all(hasattr(visual, n) for n in needed) or getattr(visual, "proj", None) is None:
            raise ConfigError(
                f"{model_id}: dense CLIP features need an open_clip ViT image tower with a "
                f"projection (got {type(visual).__name__})"
            )
        if getattr(visual, "attn_pool", None) is not None:
            raise ConfigError(f"{model_id}: attention-pooled ViTs (CoCa) are not supported")
        if mode not in DENSE_MODES:
            raise ConfigError(f"unknown dense CLIP mode {mode!r}; choose one of {DENSE_MODES}")
        self.visual = visual
        self.mode = mode
        self.model_id = f"{model_id}/{mode}"
        size = visual.image_size
        patch = visual.patch_size
        self.window = int(size[0] if isinstance(size, tuple | list) else size)
        self.patch = int(patch[0] if isinstance(patch, tuple | list) else patch)
        self.grid = self.window // self.patch
        self.embed_dim = int(visual.proj.shape[1])
        self.mean = tuple(getattr(visual, "image_mean", None) or CLIP_MEAN)
        self.std = tuple(getattr(visual, "image_std", None) or CLIP_STD)

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.visual.conv1.weight.device

    def _embeds(self, batch: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(batch.to(v.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Unit patch embeddings in the joint space, (B, grid, grid, D)."""
        if batch.ndim != 4 or tuple(batch.shape[2:]) != (self.window,) * 2:
            raise ValueError(
                f"expected a (B, 3, {self.window}, {self.window}) batch, got {tuple(batch.shape)}"
            )
        v = self.visual
        x = self._embeds(batch)
        blocks = v.transformer.resblocks
        if not getattr(v.transformer, "batch_first", True):
            raise ConfigError(f"{self.model_id}: sequence-first transformers are not supported")
        if self.mode == "tokens":
            for blk in blocks:
                x = blk(x)
        else:
            for blk in blocks[:-1]:
                x = blk(x)
            x = _value_path(blocks[-1], x)
        x = v.ln_post(x[:, 1:]) @ v.proj
        x = F.normalize(x, dim=-1)
        return x.reshape(x.shape[0], self.grid, self.grid, -1)


def _value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``out_proj(V(ln_1(x)))`` of a residual attention block (no q-k attention)."""
    attn = block.attn
    width = x.shape[-1]
    y = block.ln_1(x)
    w = attn.in_proj_weight[2 * width:]
    b = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    y = F.linear(y, w, b)
    head_scale = getattr(attn, "head_scale", None)
    if head_scale is not None:  # open_clip Attention(scale_heads=True): per-head gain
        n, length, _ = y.shape
        y = (y.reshape(n, length, attn.num_heads, -1) * head_scale.view(1, 1, -1, 1)).reshape(
            n, length, width
        )
    y = getattr(attn, "ln_inner", nn.Identity())(y)
    y = attn.out_proj(y)
    y = getattr(block, "ln_attn", nn.Identity())(y)
    return getattr(block, "ls_1", nn.Identity())(y)
