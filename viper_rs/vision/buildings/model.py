"""BuildingNet: a small U-Net that labels each pixel background, building interior or
building boundary, at one fixed ground resolution (``BuildingNetConfig.gsd_m``).

The boundary class (a building's outer ring, and every pixel where two footprints touch)
is what lets touching buildings come apart: instances are the connected interiors, grown
back over the boundary ring (:mod:`viper_rs.vision.buildings.instances`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

#: Output channels, in order.
CLASSES: tuple[str, ...] = ("background", "interior", "boundary")
BACKGROUND, INTERIOR, BOUNDARY = range(len(CLASSES))


@dataclass(frozen=True)
class BuildingNetConfig:
    """The architecture and the input contract of a BuildingNet (stored in its checkpoint).

    ``widths`` are the channels of each encoder level (one 2x downsampling between levels);
    ``gsd_m`` the ground metres per pixel the model runs at; ``mean``/``std`` normalise RGB
    in [0, 1]; ``gsd_range_m`` the input resolutions it was trained and validated for.
    """

    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    in_channels: int = 3
    gsd_m: float = 0.3
    gsd_range_m: tuple[float, float] = (0.1, 1.2)
    mean: tuple[float, float, float] = (0.40, 0.40, 0.37)
    std: tuple[float, float, float] = (0.20, 0.18, 0.18)
    classes: tuple[str, ...] = field(default=CLASSES)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (stored in checkpoints and model cards)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildingNetConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error (another architecture)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown BuildingNet config keys: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @property
    def stride(self) -> int:
        """Inputs are padded to a multiple of this (the total downsampling)."""
        return 2 ** (len(self.widths) - 1)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class BuildingNet(nn.Module):
    """U-Net: ``forward`` maps (N, 3, H, W) normalised RGB to (N, 3, H, W) class logits.

    H and W must be multiples of ``config.stride`` (:func:`pad_to_stride`)."""

    def __init__(self, config: BuildingNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or BuildingNetConfig()
        w = self.config.widths
        self.down = nn.ModuleList(
            [_block(self.config.in_channels if i == 0 else w[i - 1], w[i]) for i in range(len(w))]
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(len(w) - 1))]
        )
        self.merge = nn.ModuleList([_block(2 * w[i], w[i]) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv2d(w[0], len(self.config.classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def pad_to_stride(x: torch.Tensor, stride: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (N, C, H, W) at the bottom/right to multiples of ``stride``; returns the
    padded tensor and the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
