"""Test helpers: GRAFT checkpoints in the published layout, built with Hugging Face
transformers (random weights, no download), and the reference patch embeddings computed
the way GRAFT's own code does (``last_hidden_state[:, 1:] -> projector -> L2``).

Shared by the model, embedder and CLI tests; the model is built once per test session.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: openai/clip-vit-base-patch16's vision config.
HF_VISION = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    patch_size=16, image_size=224, num_channels=3, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=512,
)
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@functools.cache
def hf_graft() -> tuple[torch.nn.Module, torch.nn.Sequential]:
    """A random CLIPVisionModelWithProjection and GRAFT projector. Every tensor is random
    (LayerNorm weights around 1, biases around 0), so a swapped LayerNorm weight/bias or
    q/k/v would show."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):  # skip transformers' own (slow) initialisation
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**HF_VISION))
        projector = torch.nn.Sequential(
            torch.nn.LayerNorm(768, eps=1e-5), torch.nn.Linear(768, 512, bias=False)
        )
    model, projector = model.to_empty(device="cpu").eval(), projector.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in (model, projector):
            for name, p in m.named_parameters():
                noise = torch.randn(p.shape, generator=gen)
                if p.ndim > 1:
                    p.copy_(noise * 0.02)
                elif name.endswith("weight"):  # LayerNorm gains
                    p.copy_(1 + 0.1 * noise)
                else:  # biases, class embedding
                    p.copy_(0.1 * noise)
        model.vision_model.embeddings.position_ids.copy_(torch.arange(197)[None])
    return model, projector


def published_state(projection: bool = True, position_ids: bool = True,
                    vision_model: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of a GRAFT Lightning module: ``satellite_image_backbone.`` (HF names),
    ``projector.0/1`` and ``logit_scale``."""
    model, projector = hf_graft()
    sd: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if k.startswith("visual_projection") and not projection:
            continue
        if not vision_model:
            k = k.replace("vision_model.", "", 1)
        sd["satellite_image_backbone." + k] = v.clone()
    if position_ids:
        pre = "vision_model." if vision_model else ""
        sd[f"satellite_image_backbone.{pre}embeddings.position_ids"] = torch.arange(197)[None]
    for k, v in projector.state_dict().items():
        sd["projector." + k] = v.clone()
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return sd


def lightning(state: dict[str, torch.Tensor]) -> dict:
    """Wrap a state dict the way PyTorch Lightning saves a checkpoint."""
    return {
        "epoch": 7, "global_step": 12345, "pytorch-lightning_version": "2.1.3",
        "state_dict": state, "loops": {}, "callbacks": {}, "optimizer_states": [],
        "lr_schedulers": [], "hyper_parameters": {"lr": 1e-5, "temp": True},
    }


@functools.cache
def _written(path: str, projection: bool) -> str:
    torch.save(lightning(published_state(projection=projection)), path)
    return path


def write_checkpoint(folder: Path, projection: bool = True) -> Path:
    """A published-layout ``.ckpt`` in ``folder`` (written once per folder)."""
    name = "graft_proj.ckpt" if projection else "graft_noproj.ckpt"
    return Path(_written(str(Path(folder) / name), projection))


def clip_input(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) CLIP-normalised float32, as GRAFT's preprocessing."""
    x = (rgb.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def reference(pixels: torch.Tensor, image_level: bool = False):
    """GRAFT's patch embeddings (B, 14, 14, 512) for CLIP-normalised (B, 3, 224, 224);
    with ``image_level`` also the (B, 512) unit CLIP image embeddings."""
    model, projector = hf_graft()
    with torch.inference_mode():
        out = model(pixel_values=pixels)
        x = F.normalize(projector(out.last_hidden_state[:, 1:, :]), dim=-1)
        patches = x.reshape(x.shape[0], 14, 14, -1).numpy()
        if image_level:
            return patches, F.normalize(out.image_embeds, dim=-1).numpy()
    return patches


def synthetic_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 scene-like image: fields, a road, blocky roofs, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), np.float32)
    img[:] = (95, 120, 70)
    img[(xx // 40 + yy // 50) % 2 == 0] = (140, 130, 100)
    img[np.abs(yy - 0.6 * xx - 20) < 6] = (70, 70, 75)
    for _ in range(12):
        r, c = rng.integers(0, h - 12), rng.integers(0, w - 12)
        img[r:r + rng.integers(6, 14), c:c + rng.integers(6, 14)] = rng.integers(150, 230, 3)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-vector cosine similarity along the last axis."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def tiny_clip() -> torch.nn.Module:
    """A small random open_clip CLIP (QuickGELU; 32-px images, 16-px patches, 32-d space)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(3)
    return CLIP(
        32,
        CLIPVisionCfg(layers=2, width=64, patch_size=16, image_size=32),
        CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    ).eval()


def write_torchscript(model: torch.nn.Module, path: Path) -> Path:
    """Save ``model`` traced, like OpenAI's original TorchScript CLIP archives."""
    import warnings

    size = model.visual.image_size[0]
    img = torch.ones(1, 3, size, size)
    txt = torch.zeros(1, 77, dtype=torch.int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(
            model, {"forward": (img, txt), "encode_text": (txt,), "encode_image": (img,)}
        )
    traced.save(str(path))
    return Path(path)
