"""What one question in the app does: open the image, answer, and package the evidence.

Nothing here imports gradio, so the app's behaviour is tested without a browser.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from viper_rs.config import Settings
from viper_rs.errors import ConfigError, ImageError, ViperError
from viper_rs.geo import GeoImage
from viper_rs.lru import LRU
from viper_rs.overrides import panel_overrides
from viper_rs.ui.catalog import Catalog
from viper_rs.ui.evidence import (
    answer_markdown,
    escape_markdown,
    overlay,
    region_rows,
    write_evidence,
)
from viper_rs.ui.search import RegionSearch, SearchView

log = logging.getLogger(__name__)

#: Longest question the app accepts (characters).
MAX_QUESTION_CHARS = 1000
#: Agents kept alive (each holds models and sandbox workers).
MAX_AGENTS = 2
#: Control characters (NUL, escape...), replaced by spaces in questions.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Options:
    """The settings panel: which detector and planner, the LLM endpoint, thresholds. Every
    field mirrors the Settings field of its name (blank or None: keep the base value)."""

    detector: str = "auto"
    planner: str = "auto"
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = field(default="", repr=False)
    score_threshold: float | None = None
    min_region_m2: float | None = None
    next_to_m: float | None = None
    small_max_m2: float | None = None
    large_min_m2: float | None = None
    sam: bool = True

    def settings(self, base: Settings) -> Settings:
        """``base`` with this panel's values on top (blank fields keep the base value);
        every field is the Settings field of its name, converted as
        :data:`viper_rs.overrides.OVERRIDES` says."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return base.model_copy(update=panel_overrides(values))

    def agent_key(self, scene_seed: int | None) -> tuple:
        """What decides which agent (models, planner) answers; tool thresholds do not."""
        return (self.detector, self.planner, self.llm_base_url.strip(), self.llm_model.strip(),
                hash(self.llm_api_key), self.score_threshold, self.sam,
                scene_seed if self.detector == "oracle" else None)


@dataclass
class Turn:
    """Everything the app shows for one question."""

    message: str
    answer: Any = None
    overlay: tuple | None = None
    rows: list[list] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    program: str = ""
    trace: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the question was answered."""
        return self.answer is not None and self.answer.error is None


class Controller:
    """Answers the app's questions and region searches; holds the catalog, the agents, the
    chip index and the evidence folder."""

    def __init__(self, catalog: Catalog, settings: Settings | None = None,
                 out_dir: Path | None = None, region: RegionSearch | None = None) -> None:
        self.catalog = catalog
        self.settings = settings or Settings.from_env()
        self.region = region or RegionSearch.for_folders(catalog.folders, self.settings)
        self._own_out = out_dir is None
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="viper_rs_ui_"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._agents: LRU[tuple, Any] = LRU(MAX_AGENTS)
        self._lock = threading.RLock()
        self._turns = 0
        self._search_ids = itertools.count(1)  # not under _lock: a question may hold it

    # ------------------------------------------------------------------ agents
    def agent(self, options: Options, image_key: str | None = None) -> Any:
        """The agent for ``options`` (built once, the last few kept); ConfigError on bad
        settings (unknown detector, LLM without a model, oracle on a non-demo image...)."""
        from viper_rs.agent import Agent

        scene = None
        if options.detector == "oracle":
            scene = self.catalog.scene(image_key) if image_key else None
            if scene is None:
                raise ConfigError("the oracle detector answers from a demo scene's ground "
                                  "truth; pick a demo scene or another detector")
        key = options.agent_key(scene.seed if scene is not None else None)
        with self._lock:
            cached = self._agents.get(key)
            if cached is not None:
                return cached
            settings = options.settings(self.settings)
            detector: Any = settings.detector
            if scene is not None:
                from viper_rs.vision.oracle import OracleDetector

                detector = OracleDetector(scene, settings)
            agent = Agent(settings, detector=detector)
            for old in self._agents.put(key, agent):
                old.close()
            return agent

    def warm_up(self, options: Options) -> None:
        """Build the default agent and open the default image ahead of the first question."""
        try:
            self.agent(options, self.catalog.default_key)
            if self.catalog.default_key:
                self.catalog.open(self.catalog.default_key)
        except ViperError as exc:
            log.warning("warm-up: %s", exc)

    # ------------------------------------------------------------------ questions
    def ask(
        self,
        image_key: str | None,
        question: str,
        options: Options,
        gsd: float | None = None,
        progress: Progress | None = None,
    ) -> Turn:
        """Answer ``question`` about image ``image_key``; every failure becomes a message."""
        step = progress or (lambda fraction, what: None)
        question = _CONTROL.sub(" ", question or "").strip()
        if not question:
            return Turn("Type a question about the image first, e.g. *How many buildings "
                        "are there?*")
        if len(question) > MAX_QUESTION_CHARS:
            return Turn(f"That question is {len(question):,} characters long; the limit is "
                        f"{MAX_QUESTION_CHARS:,}. Ask one short question at a time.")
        image = None
        try:
            step(0.05, "Reading the image")
            image = self.catalog.open(image_key, gsd)
            step(0.15, "Loading the detector and planner")
            agent = self.agent(options, image_key)
            step(0.3, "Planning and running the program")
            with self._lock:
                answer = agent.ask(image, question, settings=options.settings(self.settings))
            step(0.9, "Writing the evidence")
            turn = self.package(image, answer)
        except ImageError as exc:
            entry = self.catalog.entries.get(image_key or "")
            reason = _hide_path(str(exc), entry.path if entry and entry.kind == "upload" else None)
            turn = Turn(f"Could not read the image: {escape_markdown(reason)}")
        except ConfigError as exc:
            turn = Turn(f"Settings problem: {escape_markdown(str(exc))}")
        except ViperError as exc:
            turn = Turn(f"Could not answer ({exc.type}): {escape_markdown(str(exc))}")
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("unexpected error answering %r", question)
            turn = Turn(f"Internal error ({type(exc).__name__}): {escape_markdown(str(exc))}. "
                        "The app is still running; the details are in its log.")
        if turn.overlay is None and image is not None:
            turn.overlay = overlay(image, None)
        return turn

    def package(self, image: GeoImage, answer: Any) -> Turn:
        """The Turn for an answer: chat text, overlay, region table, evidence files."""
        with self._lock:
            self._turns += 1
            folder = self.out_dir / f"answer-{self._turns:04d}"
        files: list[str] = []
        try:
            files = [str(p) for p in write_evidence(image, answer, folder)]
        except Exception as exc:  # noqa: BLE001 - evidence files are extra; the answer stands
            log.exception("could not write evidence")
            answer.notes.append(f"evidence files could not be written: {exc}")
        return Turn(
            message=answer_markdown(answer),
            answer=answer,
            overlay=overlay(image, answer),
            rows=region_rows(image, answer),
            files=files,
            program=answer.program or "",
            trace=answer.trace,
        )

    # ------------------------------------------------------------------ region search
    def search_region(self, query: str, k: int = 10,
                      progress: Progress | None = None) -> SearchView:
        """The best chips for ``query`` (building the index first if needed), with the hits'
        GeoJSON written for download; failures come back as a message."""
        view = self.region.search(query, k, progress)
        if view.geojson is None:
            return view
        folder = self.out_dir / f"search-{next(self._search_ids):04d}"
        slug = re.sub(r"[^a-z0-9]+", "-", view.geojson["properties"]["query"].lower())
        path = folder / f"{slug.strip('-')[:40] or 'hits'}.geojson"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(view.geojson), encoding="utf-8")
            view.files = [str(path)]
        except OSError as exc:
            log.exception("could not write %s", path)
            view.message += f"\n- The GeoJSON could not be written: {escape_markdown(str(exc))}"
        return view

    def build_region(self, progress: Progress | None = None) -> str:
        """Add the folders' new chips to the index; a markdown message either way."""
        try:
            return self.region.build(progress)
        except ViperError as exc:
            return f"Could not build the index: {escape_markdown(str(exc))}"
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("building the index failed")
            return (f"Could not build the index: internal error ({type(exc).__name__}: "
                    f"{escape_markdown(str(exc))}); the details are in the app's log.")

    def open_hit(self, hit: Any) -> tuple[str | None, str]:
        """List a search hit's chip in the catalog; returns (its key or None, a message)."""
        key = self.catalog.add_chip(hit)
        try:
            image = self.catalog.open(key)
        except ViperError as exc:
            self.catalog.entries.pop(key, None)
            return None, f"Could not open chip #{hit.rank}: {escape_markdown(str(exc))}"
        return key, (f"Opened chip **#{hit.rank}** (score {float(hit.score):.3f}) of "
                     f"**{escape_markdown(hit.source_name)}** from the region search. "
                     f"{describe(image)} Ask a question about it.")

    def load_upload(self, path: str | Path, gsd: float | None = None) -> tuple[str | None, str]:
        """List an uploaded file; returns (its key or None, a chat message)."""
        name = Path(path).name
        try:
            key, image = self.catalog.add_upload(path, gsd)
            text = describe(image)
        except ImageError as exc:
            reason = _hide_path(str(exc), Path(path))
            return None, (f"Could not use the upload **{escape_markdown(name)}**: "
                          f"{escape_markdown(reason)}")
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("unexpected error loading %s", path)
            return None, (f"Could not use the upload **{escape_markdown(name)}**: internal error "
                          f"({type(exc).__name__}); the details are in the app's log.")
        return key, f"Loaded **{escape_markdown(name)}**. {text} Ask a question about it."

    def close(self) -> None:
        """Stop every agent's sandbox workers and remove the evidence folder (if ours)."""
        with self._lock:
            for agent in self._agents.values():
                agent.close()
            self._agents.clear()
        if self._own_out:
            shutil.rmtree(self.out_dir, ignore_errors=True)


def describe(image: GeoImage) -> str:
    """One line about an image: size, bands, ground size and georeference."""
    d = image.describe()
    parts = [f"{d['width']}×{d['height']} px", ", ".join(d["bands"])]
    if d["gsd_m"]:
        parts.append(f"{d['gsd_m']:.2f} m/px")
    parts.append(d["crs"] if d["crs"] else "no CRS")
    text = "Image: " + "; ".join(escape_markdown(str(p)) for p in parts) + "."
    if image.area_unit != "m2":
        text += " It has no ground size, so areas are in pixels: enter its GSD (m/px)."
    return text



def _hide_path(text: str, path: Path | None) -> str:
    """``text`` naming an uploaded file as the user knows it, not by its server path."""
    return text if path is None else text.replace(str(path), path.name)
