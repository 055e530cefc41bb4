"""Parameter-name mapping between Hugging Face ``CLIPVisionModel`` and open_clip's ViT.

Names on the Hugging Face side are relative to the vision transformer (no
``vision_model.`` prefix); names on the open_clip side are relative to
``open_clip.transformer.VisionTransformer``. Hugging Face keeps separate query, key and
value projections where open_clip (like ``nn.MultiheadAttention``) stores one stacked
``in_proj_weight``/``in_proj_bias`` in q, k, v order, so the mapping merges and splits them.

Example: ``encoder.layers.3.self_attn.k_proj.weight`` <->
rows 768..1535 of ``transformer.resblocks.3.attn.in_proj_weight`` (ViT-B).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

Tensor = torch.Tensor

#: Hugging Face keys that carry no weights (a buffer older transformers versions saved).
IGNORED_HF_KEYS = ("embeddings.position_ids",)

_FIXED = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight",
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_LAYER = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_QKV = ("q", "k", "v")
_HF_LAYER_RE = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_HF_QKV_RE = re.compile(r"^self_attn\.([qkv])_proj\.(weight|bias)$")
_OC_LAYER_RE = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_LAYER_REV = {v: k for k, v in _LAYER.items()}
_FIXED_REV = {v: k for k, v in _FIXED.items()}


def hf_to_open_clip(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Convert Hugging Face vision-tower tensors to open_clip names.

    Returns the converted dict and the input keys that could not be converted (unknown
    names, or a q/k/v projection whose two siblings are absent). Ignored keys
    (:data:`IGNORED_HF_KEYS`) are dropped silently.
    """
    out: dict[str, Tensor] = {}
    leftover: list[str] = []
    qkv: dict[tuple[int, str], dict[str, tuple[str, Tensor]]] = {}
    for key, value in state.items():
        if key in IGNORED_HF_KEYS:
            continue
        if key in _FIXED:
            out[_FIXED[key]] = value
            continue
        m = _HF_LAYER_RE.match(key)
        if m is None:
            leftover.append(key)
            continue
        layer, rest = int(m.group(1)), m.group(2)
        if rest in _LAYER:
            out[f"transformer.resblocks.{layer}.{_LAYER[rest]}"] = value
            continue
        q = _HF_QKV_RE.match(rest)
        if q is None:
            leftover.append(key)
            continue
        qkv.setdefault((layer, q.group(2)), {})[q.group(1)] = (key, value)
    for (layer, kind), parts in sorted(qkv.items()):
        if len(parts) != 3:
            leftover.extend(name for name, _ in parts.values())
            continue
        tensors = [parts[p][1] for p in _QKV]
        if len({tuple(t.shape) for t in tensors}) != 1:
            leftover.extend(parts[p][0] for p in _QKV)
            continue
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(tensors, dim=0)
    return out, leftover


def open_clip_to_hf(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Convert open_clip ViT tensors to Hugging Face vision-tower names (the inverse).

    Returns the converted dict and the input keys without a Hugging Face counterpart
    (``proj``, which Hugging Face keeps outside the vision transformer, is one of them).
    """
    out: dict[str, Tensor] = {}
    leftover: list[str] = []
    for key, value in state.items():
        if key in _FIXED_REV:
            out[_FIXED_REV[key]] = value
            continue
        m = _OC_LAYER_RE.match(key)
        if m is None:
            leftover.append(key)
            continue
        layer, rest = int(m.group(1)), m.group(2)
        prefix = f"encoder.layers.{layer}."
        if rest in _LAYER_REV:
            out[prefix + _LAYER_REV[rest]] = value
        elif rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            if value.shape[0] % 3:
                leftover.append(key)
                continue
            for name, part in zip(_QKV, value.chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{name}_proj.{kind}"] = part
        else:
            leftover.append(key)
    return out, leftover
