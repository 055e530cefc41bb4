"""What one question in the app does: open the image, answer, and package the evidence.

Nothing here imports gradio, so the app's behaviour is tested without a browser.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viper_rs.core.admission import out_of_memory
from viper_rs.core.config import Settings, env_var
from viper_rs.core.errors import ConfigError, ImageError, InputError, ViperError
from viper_rs.core.geo import GeoImage
from viper_rs.core.lru import LRU
from viper_rs.core.overrides import OVERRIDES, panel_overrides
from viper_rs.ui.answer_map import map_html
from viper_rs.ui.area import (
    AREA_CHIP_M,
    MAX_AREA_CHIPS,
    AreaView,
    area_imagery,
    area_map_html,
    new_map_id,
    parse_area,
)
from viper_rs.ui.area_jobs import (
    MAX_PIXEL_M,
    MIN_PIXEL_M,
    AreaBudget,
    AreaBudgetError,
    AreaJobs,
    AreaRequest,
    outcome_problem,
    plan_area,
)
from viper_rs.ui.catalog import Catalog
from viper_rs.ui.evidence import (
    _points,
    answer_markdown,
    escape_markdown,
    evidence_geojson,
    overlay,
    overlay_colours,
    plain_text,
    region_rows,
    write_evidence,
)
from viper_rs.ui.search import RegionSearch, SearchView

if TYPE_CHECKING:
    from viper_rs.agent import Agent
    from viper_rs.core.detector import Detector

log = logging.getLogger(__name__)

#: What an area question without an area says (a blank box and no map shown).
NO_AREA = ("No area to ask about: the box is blank and no map shows a view (a failed search "
           "clears the map). Search first, the map then shows the hits, and move it to the "
           "area; or type the area as W,S,E,N in degrees.")
#: Longest question the app accepts (characters).
MAX_QUESTION_CHARS = 1000
#: Agents kept alive (each holds models and sandbox workers).
MAX_AGENTS = 2
#: Control characters (NUL, escape...), replaced by spaces in questions.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Progress = Callable[[float, str], None]


def _clean_question(question: str | None, about: str) -> tuple[str, str | None]:
    """The question with control characters as spaces, and the message for an empty or
    too long one (None when it can be asked)."""
    question = _CONTROL.sub(" ", question or "").strip()
    if not question:
        return question, (f"Type a question about {about} first, e.g. *How many buildings "
                          "are there?*")
    if len(question) > MAX_QUESTION_CHARS:
        return question, (f"That question is {len(question):,} characters long; the limit is "
                          f"{MAX_QUESTION_CHARS:,}. Ask one short question at a time.")
    return question, None

#: The settings panel's labels, by Options field (and "gsd" for the image's GSD input).
FIELD_LABELS: dict[str, str] = {
    "detector": "Detector", "planner": "Planner", "llm_base_url": "LLM endpoint (base URL)",
    "llm_model": "LLM model", "llm_api_key": "API key", "score_threshold": "Score threshold",
    "min_region_m2": "Smallest region (m2)", "next_to_m": "'next to' distance (m)",
    "small_max_m2": "small < (m2)", "large_min_m2": "large ≥ (m2)",
    "sam": "SAM refinement", "gsd": "GSD (m/px)",
}

#: CLI flags in library texts and what the app calls them: its fields. The other flags of
#: :data:`~viper_rs.core.overrides.OVERRIDES` read as their ``VIPER_RS_*`` variables.
APP_NAMES: dict[str, str] = {
    "--llm-base-url": "Settings › LLM endpoint (base URL)",
    "--llm-model": "Settings › LLM model",
    "--small-max-m2": "Settings › small < (m2)",
    "--large-min-m2": "Settings › large ≥ (m2)",
    "--threshold": "Settings › Score threshold",
    "--detector": "Settings › Detector",
    "--planner": "Settings › Planner",
    "--no-sam": "Settings › SAM refinement",
    "--bands": "the file's band descriptions",
    "--gsd": "the GSD (m/px) field",
}
#: The variable of each other flag (e.g. ``--graft-checkpoint``: VIPER_RS_GRAFT_CHECKPOINT).
_FLAG_VARIABLES: dict[str, str] = {
    o.flag: env_var(o.field) for o in OVERRIDES.values() if o.flag and o.flag not in APP_NAMES}
_FLAGS = "|".join(re.escape(f) for f in sorted([*APP_NAMES, *_FLAG_VARIABLES], key=len,
                                               reverse=True))
#: "pass --flag VALUE", with the verb and the value optional.
_FLAG_TEXT = (r"(?:\b(?P<verb>pass|use) )?(?<![\w-])(?P<flag>" + _FLAGS
              + r")(?![\w-])(?: (?P<value>PATH|URL|MODEL|TAG|DIR|MB|M|S)\b)?")
_FLAG = re.compile(_FLAG_TEXT)
#: A flag and its variable side by side ("pass --x PATH or set VIPER_RS_X=PATH", "set by
#: --x or VIPER_RS_X"): the app names the variable once.
_FLAG_AND_VARIABLE = re.compile(_FLAG_TEXT + r"(?: or |, | / )(?:set )?(?P<env>VIPER_RS_\w+?)"
                                r"(?:=(?P<env_value>[A-Z]+|\d+))?\b")
_GSD_HINT = re.compile(r"give its GSD, e\.g\. --gsd ([\d.]+),")


def _app_name(m: re.Match) -> str:
    """What the app calls the flag of a :data:`_FLAG` match."""
    flag, verb, value = m.group("flag"), m.group("verb"), m.group("value")
    if flag in APP_NAMES:
        return ("set " if verb else "") + APP_NAMES[flag]
    env = _FLAG_VARIABLES[flag]
    if not verb:
        return env
    return f"set {env}{'=' + value if value else ''} before starting the app"


def _app_pair(m: re.Match) -> str:
    """A flag named with its own variable, as the app says it (other pairs unchanged)."""
    if _FLAG_VARIABLES.get(m.group("flag")) != m.group("env"):
        return m.group(0)
    return _app_name(m)


#: Detectors whose regions carry no score to threshold (spectral classes are rules; the
#: oracle is ground truth).
UNSCORED_DETECTORS: dict[str, str] = {
    "spectral": "the spectral detector has no score threshold (its classes are rules)",
    "oracle": "the oracle detector has no score threshold (it is the ground truth)",
}


def app_text(text: str) -> str:
    """``text`` naming the app's fields instead of CLI flags ("pass --llm-model" reads "set
    Settings › LLM model"); the CLI keeps its flags."""
    text = _GSD_HINT.sub(r"enter it in the GSD (m/px) field, e.g. \1,", text)
    return _FLAG.sub(_app_name, _FLAG_AND_VARIABLE.sub(_app_pair, text))


def threshold_control(detector: str, settings: Settings) -> tuple[bool, str]:
    """(usable, info) of the Score threshold field for detector ``detector`` (``auto`` as
    it resolves with ``settings``)."""
    name = detector or "auto"
    if name == "auto":
        from viper_rs.core.weights import auto_detector

        try:
            resolved = auto_detector(settings)
        except Exception:  # noqa: BLE001 - the field stays usable when this cannot be told
            resolved = "auto"
        if resolved in UNSCORED_DETECTORS:
            return False, f"auto uses spectral: {UNSCORED_DETECTORS[resolved]}"
        name = resolved
    if name in UNSCORED_DETECTORS:
        return False, UNSCORED_DETECTORS[name]
    return True, "0-1; blank: calibrated per concept"


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
        :data:`viper_rs.core.overrides.OVERRIDES` says."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return base.model_copy(update=panel_overrides(values))

    def problems(self, base: Settings | None = None) -> list[str]:
        """What is out of range, one sentence per field naming it by its panel label
        (:data:`FIELD_LABELS`); the size limits are checked against ``base`` when one of
        them is blank."""
        out: list[str] = []
        t = self.score_threshold
        if t is not None and not (math.isfinite(t) and 0.0 <= t <= 1.0):
            out.append(f"{FIELD_LABELS['score_threshold']} must be from 0 to 1, got {t:g}")
        for name in ("min_region_m2", "next_to_m", "small_max_m2", "large_min_m2"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                out.append(f"{FIELD_LABELS[name]} must be 0 or more, got {v:g}")
        small = self.small_max_m2 if self.small_max_m2 is not None else (
            base.small_max_m2 if base is not None else None)
        large = self.large_min_m2 if self.large_min_m2 is not None else (
            base.large_min_m2 if base is not None else None)
        if (small is not None and large is not None and small >= 0 and large >= 0
                and small >= large):
            out.append(f"{FIELD_LABELS['small_max_m2']} must be less than "
                       f"{FIELD_LABELS['large_min_m2']}, got {small:g} and {large:g}")
        return out

    def check(self, base: Settings | None = None) -> None:
        """InputError naming every out-of-range field (see :meth:`problems`)."""
        problems = self.problems(base)
        if problems:
            raise InputError("; ".join(problems))

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
    #: The answer map (``gr.HTML`` value, see :mod:`viper_rs.ui.answer_map`); "" without one.
    map_html: str = ""
    #: Overlay colour per annotation label (``gr.AnnotatedImage`` ``color_map``).
    colours: dict[str, str] = field(default_factory=dict)
    #: What :meth:`Controller.export_session` writes for this turn (JSON-ready).
    record: dict = field(default_factory=dict)

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
        self._exports = 0
        self._said: set[str] = set()  # detector choice notes already shown in this session
        self._search_ids = itertools.count(1)  # not under _lock: a question may hold it
        self.jobs = AreaJobs()  # the running area questions' workers

    # ------------------------------------------------------------------ agents
    def agent(self, options: Options, image_key: str | None = None) -> Agent:
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
            detector: str | Detector = settings.detector
            if scene is not None:
                from viper_rs.vision.oracle import OracleDetector

                detector = OracleDetector(scene, settings)
            agent = Agent(settings, detector=detector)
            for old in self._agents.put(key, agent):
                old.close()
            return agent

    def needs_gsd(self, image_key: str | None) -> bool:
        """Whether image ``image_key`` needs a GSD typed in: it has no ground size of its
        own (True too when it cannot be opened, so the field stays usable)."""
        try:
            image = self.catalog.open(image_key)
        except Exception:  # noqa: BLE001 - the picker shows why; the field stays usable
            return True
        return image.area_unit != "m2"

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
        question, problem = _clean_question(question, "the image")
        if problem:
            return Turn(problem)
        image = None
        try:
            options.check(self.settings)
            step(0.05, "Reading the image")
            image = self.catalog.open(image_key, gsd)
            step(0.15, "Loading the detector and planner")
            agent = self.agent(options, image_key)
            step(0.3, "Planning and running the program")
            with self._lock:
                answer = agent.ask(image, question, settings=options.settings(self.settings))
            step(0.9, "Writing the evidence")
            note = agent.detector.choice_note
            with self._lock:
                hide = {note} if note and note in self._said else set()
                if note:
                    self._said.add(note)
            turn = self.package(image, answer, hide)
        except ImageError as exc:
            entry = self.catalog.entries.get(image_key or "")
            reason = _hide_path(str(exc), entry.path if entry and entry.kind == "upload" else None)
            turn = Turn(f"Could not read the image: {escape_markdown(app_text(reason))}")
        except (ConfigError, InputError) as exc:
            turn = Turn(f"Settings problem: {escape_markdown(app_text(str(exc)))}")
        except ViperError as exc:
            turn = Turn(f"Could not answer ({exc.type}): {escape_markdown(app_text(str(exc)))}")
        except MemoryError:  # the app stays up: the arrays of this question are freed
            log.warning("out of memory answering %r about %s", question, image_key)
            err = out_of_memory(image, "answering the question")
            turn = Turn(f"Could not answer: {escape_markdown(app_text(str(err)))}. The app is "
                        "still running.")
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("unexpected error answering %r", question)
            turn = Turn(f"Internal error ({type(exc).__name__}): {escape_markdown(str(exc))}. "
                        "The app is still running; the details are in its log.")
        if turn.overlay is None and image is not None:
            turn.overlay = overlay(image, None)
        turn.record = {"question": question, "image": image_key, "message": turn.message,
                       **turn.record}
        return turn

    def package(self, image: GeoImage, answer: Any, hide: set[str] | None = None) -> Turn:
        """The Turn for an answer: chat text (without the notes in ``hide``), overlay,
        region table, evidence files."""
        with self._lock:
            self._turns += 1
            folder = self.out_dir / f"answer-{self._turns:04d}"
        files: list[str] = []
        try:
            files = [str(p) for p in write_evidence(image, answer, folder)]
        except Exception as exc:  # noqa: BLE001 - evidence files are extra; the answer stands
            log.exception("could not write evidence")
            answer.notes.append(f"evidence files could not be written: {exc}")
        shown = overlay(image, answer)
        try:
            map_view = map_html(image, answer, shown[0])
        except Exception:  # noqa: BLE001 - the map is extra; the answer stands
            log.exception("could not draw the answer map")
            map_view = ""
        return Turn(
            message=answer_markdown(answer, app_text, hide or ()),
            answer=answer,
            overlay=shown,
            rows=region_rows(image, answer),
            files=files,
            program=answer.program or "",
            trace=answer.trace,
            map_html=map_view,
            colours=overlay_colours(shown[1]),
            record=_answer_record(image, answer, files),
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

    def ask_area(self, question: str, area: str | Sequence[float] | None,
                 options: Options, progress: Progress | None = None,
                 chip_m: float = AREA_CHIP_M, max_chips: int = MAX_AREA_CHIPS,
                 job: str = "", budget: AreaBudget | None = None,
                 pixel_m: float | None = None) -> AreaView:
        """Answer ``question`` about the folders' imagery inside ``area`` (W,S,E,N degrees,
        text or numbers), chip by chip, in a worker process (:mod:`viper_rs.ui.area_jobs`):
        the answer, a chips table, a map of the chips and regions, GeoJSON/GPKG downloads.
        The area is read at ``pixel_m`` metres per pixel (None: the sources'). Its cost is
        checked against ``budget`` (by default the app's, with ``max_chips``) before the
        worker starts; ``job`` names the browser session (its
        question can be cancelled with :meth:`cancel_area`). An area past the budget, a box
        that meets no source, a question the planner cannot run, a worker past its memory
        or time limit, cancelled or dead: every failure becomes a message."""
        step = progress or (lambda fraction, what: None)
        question, problem = _clean_question(question, "the area")
        if problem:
            return AreaView(problem)
        try:
            bbox = parse_area(area)
        except InputError as exc:
            return AreaView(f"Area problem: {escape_markdown(str(exc))}.")
        if bbox is None:
            return AreaView(NO_AREA)
        folders = [f for f in self.region.folders if f.exists()]
        if not folders:
            return AreaView("No image folders to ask about: start the app with `--folder DIR`.")
        budget = budget or AreaBudget(max_chips=max_chips)
        try:
            options.check(self.settings)
            if options.detector == "oracle":
                raise ConfigError("the oracle detector answers from a demo scene's ground "
                                  "truth, not about an area; pick another detector")
            step(0.02, "Finding the sources in the area and estimating the cost")
            if pixel_m is not None and not (math.isfinite(pixel_m)
                                            and MIN_PIXEL_M <= pixel_m <= MAX_PIXEL_M):
                raise InputError(f"the resolution must be from {MIN_PIXEL_M:g} to "
                                 f"{MAX_PIXEL_M:g} m/px, got {pixel_m:g}")
            settings = options.settings(self.settings)
            plan = plan_area(folders, bbox, settings, chip_m, budget, pixel_m,
                             detector=settings.detector)
            with self._lock:
                self._turns += 1
                folder = self.out_dir / f"area-{self._turns:04d}"
            request = AreaRequest(question=question, image=plan.image, bbox=bbox,
                                  settings=settings, chip_m=chip_m,
                                  folder=folder, memory_bytes=plan.memory_bytes,
                                  app_text=app_text)
            log.info("area question %r over %s: %s", question[:80], bbox, plan.estimate)
            outcome = self.jobs.run(job, request, plan.time_s, step)
            said = outcome_problem(outcome, request, plan.time_s)
            if said is not None:
                return AreaView(said, bbox=bbox)
            if outcome.error is not None:
                raise outcome.error
            view = outcome.view
            assert view is not None
            if view.map_data is not None:
                step(0.97, "Drawing the map")
                view.map_id = new_map_id()
                view.map_html = area_map_html(view.map_data, self._area_imagery(bbox),
                                              map_id=view.map_id)
            return view
        except AreaBudgetError as exc:
            return AreaView(f"**Not asked:** {escape_markdown(str(exc))}.", bbox=bbox)
        except (ConfigError, InputError) as exc:
            text = re.sub(r"--bbox ([-\d.,e]+) touches no source",
                          r"the area \1 (W,S,E,N) meets none of the folders' imagery",
                          app_text(str(exc)))
            return AreaView(f"Could not ask about this area: {escape_markdown(text)}", bbox=bbox)
        except ViperError as exc:
            return AreaView(f"Could not answer ({exc.type}): "
                            f"{escape_markdown(app_text(str(exc)))}", bbox=bbox)
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("unexpected error asking %r about %s", question, bbox)
            return AreaView(f"Internal error ({type(exc).__name__}): "
                            f"{escape_markdown(str(exc))}. The app is still running; the "
                            "details are in its log.", bbox=bbox)

    def cancel_area(self, job: str = "") -> bool:
        """Stop session ``job``'s running area question (its worker is killed; the question
        then says it was cancelled); False when none is running."""
        return self.jobs.cancel(job)

    def _area_imagery(self, bbox: list[float]) -> list[Any]:
        """The sources' pictures the area map shows (none when they cannot be had)."""
        try:
            return area_imagery(self.region.overlays(), bbox) if self.region.exists() else []
        except Exception:  # noqa: BLE001 - the map works without the pictures
            log.exception("no map imagery for the area")
            return []

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

    def load_upload(self, path: str | Path, gsd: float | None = None,
                    detector: str = "auto") -> tuple[str | None, str]:
        """List an uploaded file; returns (its key or None, a chat message). The message
        says when ``detector`` cannot answer questions about it (its bands), as asking
        would (the image stays listed: another detector may)."""
        from viper_rs.vision.factory import image_problem

        name = Path(path).name
        try:
            key, image = self.catalog.add_upload(path, gsd)
            text = describe(image)
            problem = image_problem(image, detector, self.settings)
        except ImageError as exc:
            reason = app_text(_hide_path(str(exc), Path(path)))
            return None, (f"Could not use the upload **{escape_markdown(name)}**: "
                          f"{escape_markdown(reason)}")
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("unexpected error loading %s", path)
            return None, (f"Could not use the upload **{escape_markdown(name)}**: internal error "
                          f"({type(exc).__name__}); the details are in the app's log.")
        if problem:
            return key, (f"Loaded **{escape_markdown(name)}**. {text} **The current detector "
                         "cannot answer questions about it**: "
                         f"{escape_markdown(app_text(problem))}. Upload an image with red, "
                         "green and blue bands, or pick one from the list.")
        return key, f"Loaded **{escape_markdown(name)}**. {text} Ask a question about it."

    def export_session(self, records: Sequence[dict]) -> Path:
        """Write one conversation (the :attr:`Turn.record` of each question, in order) as
        a zip of ``session.json`` (questions, answers, programs, notes, regions) and
        ``regions.geojson`` (every georeferenced answer's regions, RFC 7946, WGS84);
        returns the zip's path."""
        with self._lock:
            self._exports += 1
            folder = self.out_dir / f"session-{self._exports:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        session, regions = session_documents(records)
        path = folder / "viper-rs-session.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("session.json", json.dumps(session, indent=1, allow_nan=False))
            z.writestr("regions.geojson", json.dumps(regions, allow_nan=False))
        return path

    def close(self) -> None:
        """Stop the area workers and every agent's sandbox workers, and remove the evidence
        folder (if ours). Never waits for a running question: its workers are killed, so it
        ends at once with an error nobody reads."""
        self.jobs.stop_all()
        for agent in self._agents.values():
            try:
                agent.close()
            except Exception:  # noqa: BLE001 - closing goes on with the others
                log.exception("could not close an agent")
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
        text += (" It has no ground size: enter its GSD (m/px). Without it, areas are in "
                 "pixels and questions that need metres (buildings, roads, water...) are "
                 "refused.")
    return text



def _hide_path(text: str, path: Path | None) -> str:
    """``text`` naming an uploaded file as the user knows it, not by its server path."""
    return text if path is None else text.replace(str(path), path.name)


def _answer_record(image: GeoImage, answer: Any, files: list[str]) -> dict:
    """An answer as :meth:`Controller.export_session` keeps it: the answer JSON (regions
    in the image's own coordinates) and, for a georeferenced image, its regions as WGS84
    GeoJSON features."""
    record: dict[str, Any] = {"answer": json.loads(answer.to_json(geometry=True))}
    if answer.error is None and image.crs is not None:
        geojson = next((Path(f) for f in files if f.endswith(".geojson")), None)
        try:
            fc = (json.loads(geojson.read_text(encoding="utf-8")) if geojson is not None
                  else evidence_geojson(image, answer))
            record["features"] = fc["features"]
        except Exception:  # noqa: BLE001 - the session export then lacks these regions
            log.exception("could not keep the regions for the session export")
    return record


def session_documents(records: Sequence[dict]) -> tuple[dict, dict]:
    """(session.json, regions.geojson) of a conversation's turn records: every question
    with its answer, program and notes, and one FeatureCollection (WGS84) of all the
    regions of georeferenced images, each feature naming its turn and question."""
    turns, features = [], []
    for n, record in enumerate(records, 1):
        answer = record.get("answer") or {}
        turn = {
            "turn": n,
            "image": record.get("image"),
            "question": record.get("question"),
            "reply": plain_text(str(record.get("message") or "")),
            "answer": answer.get("answer"),
            "value": answer.get("value"),
            "ok": bool(answer) and answer.get("error") is None,
            "error": answer.get("error"),
            "program": answer.get("program"),
            "notes": answer.get("notes", []),
            "detector": answer.get("detector"),
            "planner": answer.get("planner"),
            "area_unit": answer.get("area_unit"),
            "regions": answer.get("regions", []),
            "regions_in": ("regions.geojson (WGS84)" if record.get("features") is not None
                           else "regions above (image coordinates: the image has no CRS)"),
        }
        turns.append(turn)
        for f in record.get("features") or []:
            props = {**f.get("properties", {}), "turn": n}
            features.append({**f, "id": f"{n}-{f.get('id')}", "properties": props})
    session = {"app": "viper-rs", "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "turns": turns}
    regions: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    points = [p for f in features if f.get("geometry")
              for p in _points(f["geometry"]["coordinates"])]
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        regions["bbox"] = [min(xs), min(ys), max(xs), max(ys)]
    return session, regions
