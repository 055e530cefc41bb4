"""GRAFT pixel-level image tower: CLIP ViT trunk + per-patch LayerNorm/Linear head.

GRAFT (Mall et al., ICLR 2024) aligns satellite image patches with CLIP's text space.
Its pixel-level model takes the Hugging Face ``CLIPVisionModel`` ``last_hidden_state``
(the transformer output *before* ``post_layernorm``), drops the CLS token, passes every
patch token through ``LayerNorm(768) -> Linear(768, 512, bias=False)`` and L2-normalises.

Here the trunk is open_clip's ``VisionTransformer`` with OpenAI CLIP's QuickGELU, which is
numerically the same network: patch embedding, class token, position embedding,
``ln_pre``, the residual blocks. ``ln_post``/``proj`` (HF ``post_layernorm`` and
``visual_projection``) are kept so that checkpoints load strictly and :meth:`encode_image`
can give the image-level embedding, but the patch path never uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from viper_rs.vision.modeling.clip_dense import CLIP_MEAN, CLIP_STD


@dataclass(frozen=True)
class GraftConfig:
    """Architecture of a GRAFT pixel model; the defaults are the published ViT-B/16."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    embed_dim: int = 512
    # Optional parts, present or not depending on how the checkpoint was trained:
    visual_projection: bool = True  # CLIPVisionModelWithProjection's image-level projection
    projector_bias: bool = False  # GRAFT's patch head Linear bias (the release has none)
    logit_scale: bool = True  # the contrastive temperature (unused at inference)


class GraftPixelModel(nn.Module):
    """GRAFT's pixel-level model: ``encode`` gives one 512-d unit vector per 16-px patch."""

    def __init__(self, config: GraftConfig | None = None, model_id: str = "graft") -> None:
        super().__init__()
        from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer

        self.config = cfg = config or GraftConfig()
        if cfg.image_size % cfg.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        self.model_id = model_id
        self.embed_dim = cfg.embed_dim
        self.patch = cfg.patch_size
        self.window = cfg.image_size
        self.grid = cfg.image_size // cfg.patch_size
        self.mean = CLIP_MEAN
        self.std = CLIP_STD
        self.visual = VisionTransformer(
            image_size=cfg.image_size, patch_size=cfg.patch_size, width=cfg.width,
            layers=cfg.layers, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
            output_dim=cfg.embed_dim, act_layer=QuickGELU, norm_layer=LayerNorm,
        )
        if not cfg.visual_projection:
            self.visual.proj = None
        self.projector = nn.Sequential(
            nn.LayerNorm(cfg.width, eps=1e-5),
            nn.Linear(cfg.width, cfg.embed_dim, bias=cfg.projector_bias),
        )
        if cfg.logit_scale:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        else:
            self.logit_scale = None

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.visual.conv1.weight.device

    def tokens(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 1 + grid**2, width) transformer output before ``ln_post`` (HF last_hidden_state)."""
        v = self.visual
        if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != (self.window,) * 2:
            raise ValueError(
                f"expected a (B, 3, {self.window}, {self.window}) batch, got {tuple(batch.shape)}"
            )
        x = v.conv1(batch.to(v.conv1.weight.dtype))  # (B, width, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        return v.transformer(x)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) CLIP-normalised images -> (B, 14, 14, 512) unit patch embeddings."""
        x = self.projector(self.tokens(batch)[:, 1:])
        x = F.normalize(x, dim=-1)
        return x.reshape(x.shape[0], self.grid, self.grid, -1)

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, D) unit image-level embedding (CLS -> ``ln_post`` -> ``proj``), when kept."""
        if self.visual.proj is None:
            raise ValueError("this checkpoint has no visual_projection; only patch embeddings")
        x = self.visual.ln_post(self.tokens(batch)[:, 0])
        return F.normalize(x @ self.visual.proj, dim=-1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(batch)
