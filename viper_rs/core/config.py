"""One settings object, overridable by ``VIPER_RS_*`` environment variables and CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr

#: Every detector name, in the order menus list them (the app's Detector menu and
#: ``--detector`` choices, factory messages). All but ORACLE_DETECTOR are built by name
#: (``vision.factory.build_detector``).
DETECTOR_NAMES: tuple[str, ...] = ("auto", "spectral", "clip", "graft", "oracle")
#: The detector that answers from a synthetic scene's ground truth: it is built from the
#: scene (``vision.oracle.OracleDetector``), so only demo scenes can use it.
ORACLE_DETECTOR = "oracle"
#: Every planner name, in menu order (``planning.build_planner``, the app's Planner menu).
PLANNER_NAMES: tuple[str, ...] = ("auto", "rules", "llm")


class Settings(BaseModel):
    """Everything a run can be configured with. Areas are true ground m2."""

    detector: str = "auto"
    planner: str = "auto"
    # Size words (RSVQA-style): small < small_max_m2 <= medium < large_min_m2 <= large.
    small_max_m2: float = 100.0
    large_min_m2: float = 500.0
    # Components: discard connected components smaller than this (true ground m2).
    min_region_m2: float = 4.0
    # Connectivity used for connected components (1 = 4-neighbour, 2 = 8-neighbour).
    connectivity: int = 2
    # "next to": regions whose boundaries are within this distance (metres) touch.
    next_to_m: float = 10.0
    # Sandbox limits.
    sandbox_wall_s: float = 10.0
    sandbox_cpu_s: float = 5.0
    sandbox_memory_mb: int = 512
    sandbox_workers: int = 2
    sandbox_max_output_chars: int = 20_000
    sandbox_max_tool_calls: int = 200
    # The budget of one question about one image (viper_rs.vision.cost): its estimated peak
    # memory (the whole process: decoding, the image's arrays, the detector's maps) and
    # time, from the file's header before any pixel is decoded; an image over either is
    # refused with the estimate and the ways out (crop it, ask about it as a region). 6 GB
    # is about 50 Mpx with the measured ~100 bytes per pixel: two such questions at once
    # (the app and a CLI run) leave room on a 24 GB, 2-core machine for the app's models
    # and a region run.
    image_max_memory_mb: int = Field(default=6_000, gt=0)
    image_max_time_s: float = Field(default=600.0, gt=0)
    # The budget of one question about a region (viper_rs.region.cost): its estimated peak
    # memory (all processes of the run) and time, checked before any chip is read; a
    # question over either is refused with the estimate and the ways out. Sized for the CLI
    # on a 24 GB, 2-core machine; the app passes a smaller budget of its own.
    region_max_memory_mb: int = Field(default=12_000, gt=0)
    region_max_time_s: float = Field(default=3600.0, gt=0)
    # The budget of one index build (viper_rs.index.cost): the chips it will read, embed
    # and measure and its estimated time, from the sources' headers and the chip grid before
    # any chip is read. A source whose chips alone are over it is skipped and listed; a
    # build over it is refused with the estimate and the ways out. 200,000 chips hold the
    # build's chip plan in about 0.3 GB and take from about half an hour (spectral embedder
    # on 5 m imagery: 0.008 s a chip measured) to about 2.4 days (0.3 m imagery with
    # BuildingNet's attributes: about 1 s a 256 m chip) at load ~1; the 24 h time budget
    # stops the longest of those. Every test and benchmark build is far below both.
    index_max_chips: int = Field(default=200_000, gt=0)
    index_max_time_s: float = Field(default=86_400.0, gt=0)
    # Model weights. GRAFT needs a GRAFT checkpoint (image tower) and CLIP (text tower).
    graft_checkpoint: Path | None = None
    clip_checkpoint: Path | None = None
    sam_checkpoint: Path | None = None
    # The learned building detector (BuildingNet): ``auto`` answers building concepts with
    # it when its weights load and it covers the image's resolution. building_checkpoint
    # None = the shipped weights (viper_rs/vision/buildings/weights/buildingnet.pt);
    # building_model False turns the model off.
    building_checkpoint: Path | None = None
    building_model: bool = True
    # open_clip architecture and, online only, a pretrained tag (e.g. "openai").
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = None
    # "auto" = CUDA when available, else CPU; or any torch device string.
    device: str = "auto"
    # Windows: the model sees window_px squares every window_stride_px (model pixels).
    window_px: int = 224
    window_stride_px: int = 160
    batch_size: int = 8
    # The model's native ground sampling distance (GRAFT: NAIP, ~1 m). Imagery whose GSD is
    # more than gsd_tolerance times finer or coarser is resampled to it.
    model_gsd_m: float = 1.0
    gsd_tolerance: float = 1.5
    # Score calibration data (negatives, templates, thresholds); None = the built-in file.
    calibration_file: Path | None = None
    # Overrides every per-concept threshold of the calibration file when set.
    score_threshold: float | None = None
    # SAM refinement (used when sam_checkpoint is set and sam is True).
    sam: bool = True
    sam_points: int = 3
    sam_max_regions: int = 64
    # Caches: per-image features / SAM embeddings and per-query text embeddings.
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "viper_rs")
    disk_cache: bool = True
    memory_cache_items: int = 32
    # LLM planner (issue 4): an OpenAI-compatible chat-completions endpoint. Without a base
    # URL, a configured model means api.openai.com. The key falls back to OPENAI_API_KEY;
    # loopback endpoints (Ollama, vLLM, llama.cpp) need none. The key is never serialised.
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = Field(default=None, repr=False, exclude=True)
    llm_max_tokens: int = Field(default=1024, ge=16)
    llm_timeout_s: float = Field(default=60.0, gt=0)
    # Retries of one request on rate limits (429), 5xx and timeouts, with backoff.
    llm_retries: int = Field(default=2, ge=0)
    # How many times a failing program is sent back with its error for a corrected one.
    llm_repair_attempts: int = Field(default=2, ge=0)
    # Generated programs cached on disk under <cache_dir>/programs.
    llm_cache: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``VIPER_RS_<FIELD>`` variables, then explicit (non-None) overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = env_var(name)
            if key in env and env[key] != "":
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def env_var(name: str) -> str:
    """The environment variable of Settings field ``name`` (``VIPER_RS_<NAME>``)."""
    return f"VIPER_RS_{name.upper()}"
