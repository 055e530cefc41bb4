"""What an index build will cost, known before any chip is read, and the budget that skips
the sources and refuses the builds that cost too much (issue 23).

:func:`estimate_source` counts a source's chips from its size and the chip grid alone
(:func:`viper_rs.index.chips.chip_count`: nothing listed, no pixel read) and prices them
with the measured seconds per chip of the embedder in use and of the chip attributes;
:func:`estimate_build` adds the sources up with the memory of the build's chip plan and of
the index's known ids. A source whose chips alone are over the :class:`IndexBudget` is
skipped and listed (:func:`source_over_budget`); a build over it is refused with the
estimate and the ways out (:func:`check_build`: :class:`IndexTooLarge`, exit 2).

Example::

    budget = IndexBudget.from_settings(settings)
    cost = estimate_source(source, ChipGrid(), "spectral", attributes=True)
    why = source_over_budget(cost, budget)  # None, or the reason to skip it
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.core.overrides import setting_source
from viper_rs.core.units import bytes_text, duration_text
from viper_rs.index.chips import MAX_CHIP_PX, ChipGrid, chip_count, chip_shape, pixel_m
from viper_rs.tiling.sources import Source
from viper_rs.vision.cost import BUILDING_GSD_M, BUILDING_GSD_RANGE_M

# ----------------------------------------------------------------------------- constants
# Measured 2026-12-07 (load ~1 on the shared 2-core machine) with in-process builds of
# synthetic scenes (``viper_rs.synthetic.make_scene``), spectral embedder, the embedding
# phase's seconds per chip: 51 px chips (5 m, 256 m) 0.008 s, 128 px (1 m, 128 m) 0.021 s,
# 427 px (0.3 m, 128 m) 0.116 s; with chip attributes 0.009 s (5 m: BuildingNet does not
# cover it, the class maps are shared with the embedder), 0.122 s and 0.215 s (BuildingNet
# at its 0.3 m scale: +0.10 s for 0.18 Mpx). On a loaded machine the same builds take 2-3x
# (docs/benchmarks.md, index benchmark: 0.048 s and 0.9 s a 128 px chip at load 4-6).

#: Seconds per chip besides its pixels (the read's open, the row, the store).
CHIP_S = 0.006
#: The spectral class maps (the spectral embedder, and the land-cover attributes), seconds
#: per million pixels of the chip as read.
SPECTRAL_S_PER_MPX = 0.8
#: An image tower (GRAFT, CLIP: one 224 px window per chip), seconds per chip: docs/benchmarks.md's
#: ``python -m eval.bench`` figure (307 ms per window; no weights on this machine).
TOWER_S_PER_CHIP = 0.31
#: BuildingNet (building attributes, where it covers the source's pixel size), seconds per
#: million pixels at its 0.3 m scale.
BUILDING_S_PER_MPX = 0.6
#: Memory of a build's process before the chips count (interpreter, libraries, LanceDB,
#: the spectral detector; the building model's weights), bytes.
BASE_BYTES = 650e6
BUILDING_BASE_BYTES = 1_100e6
TOWER_BASE_BYTES = 1_500e6
#: Memory per chip of the build's plan (the chip with its footprint, the task lists):
#: 720 bytes held and 1,380 at the peak of planning, measured with tracemalloc over
#: 173,889 chips; and per id of a chip already indexed (the set of known ids).
PLANNED_CHIP_BYTES = 1_500.0
KNOWN_ID_BYTES = 120.0


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class IndexBudget:
    """The most one index build may cost: chips to read (embed or measure) and time (s)."""

    chips: int
    seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexBudget:
        """``index_max_chips`` and ``index_max_time_s`` of ``settings``."""
        return cls(chips=int(settings.index_max_chips), seconds=float(settings.index_max_time_s))

    def describe(self) -> str:
        """``"200,000 chips and 1.0 days"``."""
        return f"{self.chips:,} chips and {duration_text(self.seconds)}"


@dataclass(frozen=True)
class SourceCost:
    """One source's chips and their time (nothing read yet)."""

    uri: str
    width: int
    height: int
    chips: int
    chip_px: int
    seconds: float

    def describe(self) -> str:
        """``"40,000 x 40,000 px: 17,161 chips of 512 px, about 1.2 h"``."""
        return (f"{self.width:,} x {self.height:,} px: {self.chips:,} chips of "
                f"{self.chip_px:,} px, about {duration_text(self.seconds)}")


@dataclass(frozen=True)
class BuildCost:
    """A build's estimate: ``chips`` to read (new ones, and indexed ones measured again),
    of ``planned`` chips in all (``indexed`` of them there already), its time and the peak
    memory of the build's process."""

    chips: int
    planned: int
    indexed: int
    seconds: float
    memory_bytes: int
    sources: int
    embedder: str

    def describe(self) -> str:
        """``"12,000 chips to read of 13,500 planned over 4 sources, about 25 min and
        1.2 GB with spectral (an estimate)"``."""
        return (f"{self.chips:,} chips to read of {self.planned:,} planned over "
                f"{self.sources:,} source{'s' if self.sources != 1 else ''}, about "
                f"{duration_text(self.seconds)} and {bytes_text(self.memory_bytes)} with "
                f"{self.embedder} (an estimate)")


class IndexTooLarge(InputError):
    """An index build whose estimate is over its budget, refused before any chip is read."""

    type = "budget"

    def __init__(self, message: str, cost: BuildCost, budget: IndexBudget) -> None:
        super().__init__(message)
        self.cost = cost
        self.budget = budget


# ----------------------------------------------------------------------------- estimates
def seconds_per_chip(chip_px: tuple[int, int], ground_m: float, chip_m: float, embedder: str,
                     attributes: bool, buildings: bool = True) -> float:
    """Seconds one chip of ``chip_px`` (width, height) source pixels of ``ground_m``
    metres takes to read, embed with ``embedder`` and (``attributes``) measure; building
    attributes cost BuildingNet's time where it covers ``ground_m`` (``buildings``: the
    building model is on)."""
    side = max(chip_px)
    scale = min(1.0, MAX_CHIP_PX / side)  # wider chips are read averaged down
    read_mpx = chip_px[0] * chip_px[1] * scale * scale / 1e6
    spectral = SPECTRAL_S_PER_MPX * read_mpx
    s = CHIP_S + (spectral if embedder == "spectral" else TOWER_S_PER_CHIP)
    if attributes:
        if embedder != "spectral":
            s += spectral  # the class maps are not shared with a tower embedder
        lo, hi = BUILDING_GSD_RANGE_M
        if buildings and lo <= ground_m <= hi:
            s += BUILDING_S_PER_MPX * (chip_m / BUILDING_GSD_M) ** 2 / 1e6
    return s


def estimate_source(source: Source, grid: ChipGrid, embedder: str, attributes: bool,
                    buildings: bool = True) -> SourceCost:
    """``source``'s chips and their time, from its header and ``grid`` alone."""
    cw, ch, _, _ = chip_shape(source, grid)
    cw, ch = min(cw, source.width), min(ch, source.height)
    n = chip_count(source, grid)
    per = seconds_per_chip((cw, ch), pixel_m(source), grid.chip_m, embedder, attributes,
                           buildings)
    return SourceCost(uri=source.uri, width=source.width, height=source.height, chips=n,
                      chip_px=max(cw, ch), seconds=n * per)


def estimate_build(costs: Sequence[SourceCost], embedder: str, attributes: bool,
                   indexed: int = 0, remeasure: int = 0, known_ids: int = 0,
                   buildings: bool = True) -> BuildCost:
    """The build of sources priced ``costs``: ``indexed`` of their chips are in the index
    already (not read again), ``remeasure`` of those are read again to measure their
    attributes, ``known_ids`` ids the index holds (kept in memory while planning)."""
    planned = sum(c.chips for c in costs)
    todo = max(0, planned - indexed) + remeasure
    per = (sum(c.seconds for c in costs) / planned) if planned else 0.0
    base = TOWER_BASE_BYTES if embedder != "spectral" else (
        BUILDING_BASE_BYTES if attributes and buildings else BASE_BYTES)
    memory = base + planned * PLANNED_CHIP_BYTES + known_ids * KNOWN_ID_BYTES
    return BuildCost(chips=todo, planned=planned, indexed=indexed, seconds=todo * per,
                     memory_bytes=int(memory), sources=len(costs), embedder=embedder)


# ----------------------------------------------------------------------------- budget
def _raise_it() -> str:
    return (f"raise the budget ({setting_source('index_max_chips')}, "
            f"{setting_source('index_max_time_s')})")


def _over(chips: int, seconds: float, budget: IndexBudget) -> list[str]:
    """What of ``chips`` and ``seconds`` is over ``budget`` (``"3 chips > 2"``...)."""
    over = []
    if chips > budget.chips:
        over.append(f"{chips:,} chips > {budget.chips:,}")
    if seconds > budget.seconds:
        over.append(f"{duration_text(seconds)} > {duration_text(budget.seconds)}")
    return over


def source_over_budget(cost: SourceCost, budget: IndexBudget) -> str | None:
    """Why ``cost``'s source alone is over ``budget`` (the reason it is skipped with: the
    estimate, the budget and the ways out), or None when it fits."""
    over = _over(cost.chips, cost.seconds, budget)
    if not over:
        return None
    return (f"{cost.uri}: over the index build's budget on its own ({'; '.join(over)}): "
            f"{cost.describe()} (an estimate); crop it to the area you need (e.g. gdal_translate "
            f"-srcwin), use larger chips (--chip-m) or {_raise_it()}")


def check_build(cost: BuildCost, budget: IndexBudget) -> None:
    """Raise :class:`IndexTooLarge` when ``cost`` is over ``budget``, with the estimate,
    the budget and the ways out."""
    over = _over(cost.chips, cost.seconds, budget)
    if not over:
        return
    raise IndexTooLarge(
        f"this index build is over its budget ({'; '.join(over)}): {cost.describe()}. Ways "
        f"out: fewer sources per build (the index is incremental: build it in parts), larger "
        f"chips (--chip-m), --no-attributes (faster), or {_raise_it()}", cost, budget)
