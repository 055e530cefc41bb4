"""The Gradio app: pick or upload an image, ask in the chat, see the answer and its evidence."""

from __future__ import annotations

import argparse
import atexit
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from viper_rs.core.config import DETECTOR_NAMES, PLANNER_NAMES, Settings
from viper_rs.core.errors import InputError
from viper_rs.core.lru import LRU
from viper_rs.core.textsafe import configure_logging
from viper_rs.ui.answer_map import EMPTY_ANSWER_MAP, FULLSCREEN_LISTENER, HIGHLIGHT_JS
from viper_rs.ui.area import (
    AREA_CHIP_M,
    CHIP_COLUMNS,
    EMPTY_AREA_MAP,
    MAX_AREA_CHIPS,
    VIEW_LISTENER,
    ViewTracker,
)
from viper_rs.ui.area_jobs import AREA_MEMORY_BYTES, AREA_TIME_S, GIB
from viper_rs.ui.catalog import GSD_RANGE_M, IMAGE_SUFFIXES, Catalog
from viper_rs.ui.evidence import REGION_COLUMNS, escape_markdown, overlay
from viper_rs.ui.search import DEFAULT_CHIP_M, RESULT_COLUMNS, RegionSearch
from viper_rs.ui.search_map import EMPTY_MAP, MAP_LISTENER
from viper_rs.ui.session import (
    FIELD_LABELS,
    Controller,
    Options,
    Turn,
    app_text,
    describe,
    threshold_control,
)

log = logging.getLogger(__name__)

TITLE = "viper-rs: ask questions about aerial imagery"
EXAMPLES = [
    "How many buildings are there?",
    "Is there a water area next to a road?",
    "What is the area covered by trees?",
    "Are there more buildings than parkings?",
    "Is there a large building?",
]
#: Largest upload Gradio accepts (images are also limited in pixels when read).
MAX_UPLOAD = "2gb"
DETECTORS = list(DETECTOR_NAMES)
PLANNERS = list(PLANNER_NAMES)
#: Ids of the app's tabs.
CHAT_TAB, REGION_TAB = "chat-tab", "region-tab"
REGION_EXAMPLES = ["water", "trees", "buildings", "road", "parking"]
#: Entries the open image list shows before one scrolls: every one (Gradio's default shows
#: 100 and loads more only on scrolling to the end; its "all" value, None, does not reach the
#: browser). The catalog lists at most ``max_images`` images per folder.
PICKER_SHOWN = 100_000
#: Info line of the GSD field: (when the image needs one, when it does not).
GSD_INFO = {True: "for images without georeference", False: "georeferenced: not needed"}
GSD_EXAMPLE = "e.g. 0.3"
CSS = """
#answer-overlay img { object-fit: contain; }
footer { display: none !important; }
#weights td, #weights th { overflow-wrap: normal; word-break: normal; }
#weights td:nth-child(3) { white-space: nowrap; }
#weights td:nth-child(4) { overflow-wrap: anywhere; }
"""


def build_app(controller: Controller, defaults: Options | None = None) -> Any:
    """The app's Blocks, wired to ``controller``; ``defaults`` fill the settings panel."""
    import gradio as gr

    defaults = defaults or Options()
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"## {TITLE}\nPick an image (a demo scene is ready) or upload a GeoTIFF, "
                    "PNG or JPEG, then type a question and press Enter. *Region search* "
                    "finds places across the folders' imagery.")
        with gr.Tabs(selected=CHAT_TAB) as tabs:
            with gr.Tab("Chat", id=CHAT_TAB, elem_id="chat-tab"):
                with gr.Row(equal_height=False):
                    image = _image_panel(controller)
                    chat = _chat_panel(controller.catalog)
                evidence = _evidence_panel()
                settings = _settings_panel(controller.settings, defaults)
            with gr.Tab("Region search", id=REGION_TAB, elem_id="region-search"):
                region = _region_tab(controller)
        _wire_chat(controller, image, chat, evidence, settings)
        _wire_region(controller, region, tabs, image.picker, chat.chat, settings.options)
    return app


# ---------------------------------------------------------------------- chat tab
def _image_panel(controller: Controller) -> SimpleNamespace:
    """The image column (picker, GSD, info line, overlay, upload) in a namespace."""
    import gradio as gr

    catalog = controller.catalog
    first = catalog.default_key
    ui = SimpleNamespace()
    with gr.Column(scale=5):
        with gr.Row():
            ui.picker = gr.Dropdown(catalog.keys, value=first, label="Image",
                                    scale=4, elem_id="image-picker",
                                    num_choices_shown=PICKER_SHOWN)
            # A text field: a blank Number shows "0", which read as the image's GSD.
            ui.gsd = gr.Textbox("", label=FIELD_LABELS["gsd"], scale=1, elem_id="gsd",
                                max_length=40, **_gsd_field(controller, first))
        first_view, first_info, _ = _show(controller, first, None)
        ui.info = gr.Markdown(first_info, elem_id="image-info")
        ui.shown = gr.AnnotatedImage(first_view, label="Regions",
                                     elem_id="answer-overlay", height=520,
                                     buttons=[])  # fullscreen: the answer map's
        ui.upload = gr.File(label="Upload an image",
                            file_types=list(IMAGE_SUFFIXES), elem_id="upload",
                            height=110)

    def gsd_for(key: str | None) -> Any:
        field = _gsd_field(controller, key)
        return gr.update(**field, **({} if field["interactive"] else {"value": ""}))

    ui.picker.change(gsd_for, ui.picker, ui.gsd, queue=False, show_progress="hidden")
    return ui


def _gsd_field(controller: Controller, key: str | None) -> dict[str, Any]:
    """``interactive``, ``info`` and ``placeholder`` of the GSD field for image ``key``:
    usable when the image has no ground size; else read-only and blank, showing the
    image's own GSD in grey."""
    if controller.needs_gsd(key):
        return {"interactive": True, "info": GSD_INFO[True], "placeholder": GSD_EXAMPLE}
    try:
        own = controller.catalog.open(key).ground_sampling_distance
    except Exception:  # noqa: BLE001 - the picker says why it cannot be opened
        own = None
    return {"interactive": False, "info": GSD_INFO[False],
            "placeholder": f"{own:.3g} (the image's)" if own else ""}


def _chat_panel(catalog: Catalog) -> SimpleNamespace:
    """The chat column (conversation, question box, examples, clear button)."""
    import gradio as gr

    ui = SimpleNamespace()
    with gr.Column(scale=4):
        ui.chat = gr.Chatbot(
            _welcome(catalog), label="Chat", height=560, elem_id="chat",
            feedback_options=None, buttons=["copy"],
            group_consecutive_messages=False,
        )
        ui.box = gr.Textbox(placeholder="Ask about the image and press Enter",
                            show_label=False, elem_id="question", submit_btn=True,
                            max_length=None, autofocus=True)
        gr.Examples(EXAMPLES, inputs=ui.box, label="Examples")
        ui.clear = gr.Button("Clear chat", size="sm")
    return ui


def _evidence_panel() -> SimpleNamespace:
    """An answer's evidence: the map of its regions on the image, the regions table (a
    row click finds its region on the map), downloads, session export, program and
    trace."""
    import gradio as gr

    ui = SimpleNamespace()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            ui.map = gr.HTML(EMPTY_ANSWER_MAP, elem_id="answer-map",
                             js_on_load=FULLSCREEN_LISTENER, min_height=120)
        with gr.Column(scale=2):
            ui.table = gr.Dataframe(_frame([]),
                                    label="Regions (areas are true ground areas): click a "
                                    "row to find it on the map",
                                    interactive=False, elem_id="regions", max_height=320)
            ui.files = gr.File(label="Evidence: GeoJSON (WGS84), GeoPackage (native CRS), "
                               "answer JSON", file_count="multiple", interactive=False,
                               elem_id="evidence")
            ui.export = gr.Button("Download session", size="sm", elem_id="session-export")
            ui.session_file = gr.File(label="Session: questions, answers, programs, notes "
                                      "(session.json) and every region (regions.geojson, "
                                      "WGS84)", interactive=False, elem_id="session-file")
    # The picked row's region id, handed to the map by a client-side handler.
    ui.highlight = gr.Textbox("", visible=False, elem_id="map-highlight")
    ui.session = gr.State([])  # this browser session's turn records, for the export
    with gr.Accordion("Program and trace", open=False, elem_id="program-trace"):
        ui.program = gr.Code(language="python", label="Program", interactive=False)
        ui.trace = gr.JSON(label="Trace: every tool call with its result and timings")
    return ui


def _settings_panel(base: Settings, defaults: Options) -> SimpleNamespace:
    """The settings accordion: detector, planner, LLM endpoint, thresholds, weights;
    ``options`` lists the fields :func:`_options` reads, in its order."""
    import gradio as gr

    ui = SimpleNamespace()
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        with gr.Row():
            detector = gr.Dropdown(
                DETECTORS, value=defaults.detector, label="Detector",
                elem_id="detector", info="auto: GRAFT, then CLIP, when weights are "
                "found, else spectral; oracle: demo scenes' ground truth")
            planner = gr.Dropdown(
                PLANNERS, value=defaults.planner, label="Planner",
                info="rules: offline grammar; llm: an OpenAI-compatible endpoint; "
                "auto: llm when configured, else rules")
            sam = gr.Checkbox(defaults.sam, label="SAM refinement (when its weights "
                              "are found)")
        with gr.Row():
            llm_url = gr.Textbox(defaults.llm_base_url or (base.llm_base_url or ""),
                                 label="LLM endpoint (base URL)",
                                 placeholder="e.g. http://localhost:11434/v1")
            llm_model = gr.Textbox(defaults.llm_model or (base.llm_model or ""),
                                   label="LLM model", placeholder="e.g. gpt-4o-mini")
            llm_key = gr.Textbox("", label="API key (kept in memory only)",
                                 type="password",
                                 placeholder="falls back to OPENAI_API_KEY")
        # No minimum/maximum on these: Gradio would reject a value with an error badge on
        # every output; out-of-range values come back as a chat message naming the field.
        with gr.Row():
            usable, info = threshold_control(defaults.detector, base)
            threshold = gr.Textbox(_text(defaults.score_threshold),
                                   label=FIELD_LABELS["score_threshold"],
                                   placeholder="calibrated per concept", info=info,
                                   interactive=usable, elem_id="score-threshold")
            min_region = gr.Number(_first(defaults.min_region_m2, base.min_region_m2),
                                   label=FIELD_LABELS["min_region_m2"], elem_id="min-region")
            next_to = gr.Number(_first(defaults.next_to_m, base.next_to_m),
                                label=FIELD_LABELS["next_to_m"], elem_id="next-to")
            small = gr.Number(_first(defaults.small_max_m2, base.small_max_m2),
                              label=FIELD_LABELS["small_max_m2"], elem_id="small-max")
            large = gr.Number(_first(defaults.large_min_m2, base.large_min_m2),
                              label=FIELD_LABELS["large_min_m2"], elem_id="large-min")
        ui.weights = gr.Markdown(weights_markdown(base), elem_id="weights")
        ui.recheck = gr.Button("Check weights again", size="sm")
    ui.options = [detector, planner, llm_url, llm_model, llm_key, threshold, min_region,
                  next_to, small, large, sam]
    ui.threshold = threshold

    def threshold_for(name: str | None) -> Any:
        usable, text = threshold_control(name or "auto", base)
        return gr.update(interactive=usable, info=text)

    detector.change(threshold_for, detector, threshold, queue=False, show_progress="hidden")
    return ui


def _wire_chat(controller: Controller, image: SimpleNamespace, chat: SimpleNamespace,
               evidence: SimpleNamespace, settings: SimpleNamespace) -> None:
    """Events of the Chat tab: picking or uploading an image, asking, clearing, and
    checking the weights again."""
    import gradio as gr

    catalog = controller.catalog

    def on_pick(key: str, gsd_value: str | None, history: list) -> tuple:
        view, info, error = _show(controller, key, gsd_value)
        return view, info, _frame([]), None, _say(history, error) if error else history

    def on_upload(path: str | None, gsd_value: str | None, history: list,
                  detector: str | None) -> tuple:
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), history, None
        try:
            gsd_m = _gsd(gsd_value)
        except InputError as exc:
            history = _say(history, escape_markdown(str(exc)))
            return gr.skip(), gr.skip(), gr.skip(), history, None
        key, message = controller.load_upload(path, gsd_m, detector or "auto")
        history = _say(history, message)
        if key is None:
            return gr.skip(), gr.skip(), gr.skip(), history, None
        view, info, _ = _show(controller, key, gsd_m)
        return gr.update(choices=controller.catalog.keys, value=key), view, info, history, None

    # Gradio hands the progress tracker only to a parameter before ``*values``.
    def on_ask(question: str, history: list, records: list, key: str, gsd_value: str | None,
               progress: Any = gr.Progress(track_tqdm=True), *values: Any) -> Any:
        question = (question or "").strip()
        history = list(history or [])
        if question:
            history.append({"role": "user", "content": escape_markdown(question)})
        yield (history + [{"role": "assistant", "content": "Working on it…"}], "",
               gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        try:
            options, gsd_m = _options(values), _gsd(gsd_value)
        except InputError as exc:
            turn = Turn(f"Settings problem: {escape_markdown(str(exc))}")
        else:
            turn = controller.ask(key, question, options, gsd_m,
                                  progress=lambda f, what: progress(f, desc=what))
        history.extend(_messages(turn))
        if turn.record.get("question"):
            records = [*(records or []), turn.record]
        shown_value = (gr.AnnotatedImage(turn.overlay, color_map=turn.colours or None)
                       if turn.overlay is not None else gr.skip())
        yield (history, "", shown_value,
               _frame(turn.rows), turn.files or None, turn.program,
               turn.trace if turn.answer is not None else None,
               turn.map_html or EMPTY_ANSWER_MAP, records)

    def on_clear(key: str, gsd_value: Any) -> tuple:
        view, _, _ = _show(controller, key, gsd_value)
        return (_welcome(catalog), None, _frame([]), view if view is not None else gr.skip(),
                EMPTY_ANSWER_MAP, [], None)

    def on_row(evt: gr.SelectData) -> str:
        row = evt.row_value or []
        return "" if not row or row[0] is None else str(row[0])

    on_row.__annotations__["evt"] = gr.SelectData  # see _wire_region

    picker, gsd, upload, shown = image.picker, image.gsd, image.upload, image.shown
    table, files = evidence.table, evidence.files
    picked = [shown, image.info, table, files, chat.chat]
    picker.change(on_pick, [picker, gsd, chat.chat], picked)
    gsd.submit(on_pick, [picker, gsd, chat.chat], picked)
    gsd.blur(on_pick, [picker, gsd, chat.chat], picked)
    upload.upload(on_upload, [upload, gsd, chat.chat, settings.options[0]],
                  [picker, shown, image.info, chat.chat, upload])
    # A new image: the previous answer's map no longer applies.
    picker.change(lambda: EMPTY_ANSWER_MAP, None, evidence.map, queue=False,
                  show_progress="hidden")
    ask_outputs = [chat.chat, chat.box, shown, table, files, evidence.program, evidence.trace,
                   evidence.map, evidence.session]
    chat.box.submit(on_ask, [chat.box, chat.chat, evidence.session, picker, gsd,
                             *settings.options], ask_outputs,
                    concurrency_limit=1, show_progress="minimal")
    chat.clear.click(on_clear, [picker, gsd],
                     [chat.chat, files, table, shown, evidence.map, evidence.session,
                      evidence.session_file])
    table.select(on_row, None, evidence.highlight, queue=False, show_progress="hidden").then(
        None, evidence.highlight, None, js=HIGHLIGHT_JS)
    evidence.export.click(lambda records: str(controller.export_session(records or [])),
                          evidence.session, evidence.session_file)
    settings.recheck.click(lambda: weights_markdown(controller.settings), None,
                           settings.weights)


# ---------------------------------------------------------------------- region search
def _region_tab(controller: Controller) -> SimpleNamespace:
    """The Region search tab's components (query, map, results, index) in a namespace."""
    import gradio as gr

    ui = SimpleNamespace()
    with gr.Row(equal_height=True):
        ui.query = gr.Textbox(label="Find places with", placeholder="e.g. water, then Enter",
                              elem_id="region-query", scale=5, max_length=200)
        ui.k = gr.Slider(1, 50, value=10, step=1, label="Results", elem_id="region-k",
                         scale=2)
        ui.search = gr.Button("Search", variant="primary", elem_id="region-button", scale=1)
    gr.Examples(REGION_EXAMPLES, inputs=ui.query, label="Examples")
    # A callable value is read again on every page load: the index may have been built
    # (or updated, e.g. by `viper-rs index build`) since the app started.
    ui.status = gr.Markdown(controller.region.status, elem_id="region-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            ui.map = gr.HTML(EMPTY_MAP, elem_id="region-map", js_on_load=MAP_LISTENER,
                             min_height=120)
        with gr.Column(scale=2):
            ui.results = gr.Dataframe(
                _results_frame([]), label="Results: click a row to ask about that chip",
                interactive=False, elem_id="region-results", max_height=560)
            ui.geojson = gr.File(label="Results: GeoJSON (RFC 7946, WGS84)",
                                 interactive=False, elem_id="region-geojson")
    _area_panel(ui)
    with gr.Accordion("Index", open=False, elem_id="region-index-panel"):
        ui.index = gr.Textbox(str(controller.region.path), label="Index folder",
                              interactive=False, elem_id="region-index",
                              info="--index PATH or VIPER_RS_INDEX; else one per folder list "
                              "in the cache")
        ui.build = gr.Button("Build / update index", elem_id="region-build", size="sm")
    ui.hits = gr.State([])
    return ui


def _area_panel(ui: SimpleNamespace) -> None:
    """*Ask about this area*: a question, the area (typed W,S,E,N or the map's view), the
    resolution, Ask and Cancel, the answer, the chips table, the area map and the downloads
    (added to ``ui``)."""
    import gradio as gr

    gr.Markdown("### Ask about this area\nOne question over all the folders' imagery in an "
                "area, answered chip by chip (chips of "
                f"{AREA_CHIP_M:g} m, at most {MAX_AREA_CHIPS} per question) in a worker with "
                f"a memory limit ({AREA_MEMORY_BYTES / GIB:g} GB) and a time limit "
                f"({AREA_TIME_S / 60:g} min); an area too large for them is refused before it "
                "starts. Leave the box blank to use the map's current view.",
                elem_id="area-intro")
    with gr.Row(equal_height=True):
        ui.area_question = gr.Textbox(label="Question about the area",
                                      placeholder="e.g. How many buildings are there?",
                                      elem_id="area-question", scale=4, max_length=1000)
        ui.area_ask = gr.Button("Ask about this area", variant="primary",
                                elem_id="area-button", scale=1)
        ui.area_cancel = gr.Button("Cancel", variant="stop", elem_id="area-cancel", scale=0,
                                   min_width=90)
    with gr.Row(equal_height=True):
        ui.area_box = gr.Textbox(label="Area W,S,E,N (degrees)",
                                 placeholder="blank: the map's current view",
                                 elem_id="area-bbox", scale=2, max_length=200)
        ui.view = gr.Textbox(label="Map's current view (W,S,E,N)", interactive=False,
                             elem_id="area-view", scale=2,
                             placeholder="no map shown: search, then move the map")
        ui.area_gsd = gr.Number(None, label="Resolution (m/px)", elem_id="area-gsd", scale=1,
                                placeholder="blank: the sources'", min_width=120)
    ui.area_status = gr.Markdown("", elem_id="area-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            ui.area_map = gr.HTML(EMPTY_AREA_MAP, elem_id="area-map", js_on_load=VIEW_LISTENER,
                                  min_height=120)
        with gr.Column(scale=2):
            ui.area_chips = gr.Dataframe(_chips_frame([]), label="Chips of the area",
                                         interactive=False, elem_id="area-chips",
                                         max_height=520)
            ui.area_files = gr.File(label="Area: GeoJSON (regions and chips, WGS84) and "
                                    "GeoPackage (regions)", file_count="multiple",
                                    interactive=False, elem_id="area-files")


#: Browser sessions whose maps' view the app keeps (the least recent are forgotten).
MAX_SESSIONS = 1000


def _wire_region(controller: Controller, ui: SimpleNamespace, tabs: Any, picker: Any,
                 chat: Any, options: list | None = None) -> None:
    """Events of the Region search tab: search, build, opening a result in the chat, the
    maps' view, and asking about an area (with the settings panel's ``options``) or
    cancelling that."""
    import gradio as gr

    views: LRU[str, ViewTracker] = LRU(MAX_SESSIONS)
    views_lock = threading.Lock()

    def tracker(request: Any) -> ViewTracker:
        """This browser session's view of the maps."""
        key = getattr(request, "session_hash", None) or ""
        with views_lock:
            found = views.get(key)
            if found is None:
                found = ViewTracker()
                views.put(key, found)
            return found

    def on_view(evt: gr.EventData, request: gr.Request) -> Any:
        data = evt._data or {}
        text = tracker(request).post(data.get("map"), data.get("seq"), data.get("view"))
        return gr.skip() if text is None else text

    # Gradio hands the request and progress only to parameters before ``*values``.
    def on_area(question: str, box: str, gsd: Any, request: gr.Request,
                progress: Any = gr.Progress(), *values: Any) -> tuple:
        maps = tracker(request)
        try:
            chosen = _options(values) if values else Options()
            pixel_m = _number(gsd, "Resolution (m/px)")
        except InputError as exc:
            return (f"Settings problem: {escape_markdown(str(exc))}", EMPTY_AREA_MAP,
                    _chips_frame([]), None, maps.show("area", None))
        typed = bool((box or "").strip())
        area = box if typed else (maps.text or None)  # exactly the view the field shows
        result = controller.ask_area(question, area, chosen, pixel_m=pixel_m,
                                     job=getattr(request, "session_hash", None) or "",
                                     progress=lambda f, what: progress(f, desc=what))
        message = result.message
        if not typed and area:
            message = f"*Asked about the map's current view {area} (W,S,E,N).*\n\n{message}"
        shown = result.map_id if result.ok else None
        return (message, result.map_html if result.ok else EMPTY_AREA_MAP,
                _chips_frame(result.rows), result.files or None, maps.show("area", shown))

    def on_cancel(request: gr.Request) -> None:
        if not controller.cancel_area(getattr(request, "session_hash", None) or ""):
            gr.Info("No area question is running.")

    on_view.__annotations__.update(evt=gr.EventData, request=gr.Request)
    on_area.__annotations__["request"] = gr.Request
    on_cancel.__annotations__["request"] = gr.Request
    for source in (ui.map, ui.area_map):
        # Every post counts ("multiple": the default drops a post made while the previous
        # one is handled, e.g. the fitted view after the first); the tracker orders them.
        source.select(on_view, None, ui.view, show_progress="hidden", trigger_mode="multiple")
    area_outputs = [ui.area_status, ui.area_map, ui.area_chips, ui.area_files, ui.view]
    for event in (ui.area_question.submit, ui.area_ask.click):
        event(on_area, [ui.area_question, ui.area_box, ui.area_gsd, *(options or [])],
              area_outputs, concurrency_id="region", concurrency_limit=1,
              show_progress_on=[ui.area_status])
    ui.area_cancel.click(on_cancel, None, None, queue=False, show_progress="hidden")

    def on_search(query: str, k: float, request: gr.Request = None,
                  progress: Any = gr.Progress()) -> tuple:
        view = controller.search_region(query, int(k or 10),
                                        progress=lambda f, what: progress(f, desc=what))
        # The map is replaced (or cleared): the view field follows it.
        shown = tracker(request).show("search", view.map_id if view.ok else None)
        if not view.ok:  # the previous results must not pass for this query's
            return view.message, EMPTY_MAP, _results_frame([]), None, [], shown
        return (view.message, view.map_html, _results_frame(view.rows), view.files or None,
                view.hits, shown)

    on_search.__annotations__["request"] = gr.Request

    def on_build(progress: Any = gr.Progress()) -> str:
        message = controller.build_region(progress=lambda f, what: progress(f, desc=what))
        return message + "\n\n" + controller.region.status()

    def open_rank(hits: list, rank: Any, history: list) -> tuple:
        hit = next((h for h in hits or [] if str(h.rank) == str(rank)), None)
        if hit is None:
            return gr.skip(), gr.skip(), gr.skip(), "Search again: that result is gone."
        key, message = controller.open_hit(hit)
        if key is None:
            return gr.skip(), gr.skip(), gr.skip(), message
        entry = controller.catalog.entries.get(key)
        if entry is not None and entry.roi is not None and entry.roi != entry.window:
            message += (" The chip is outlined in orange on its tile: answers count only "
                        "inside it, the rest is context.")
        return (gr.update(choices=controller.catalog.keys, value=key),
                gr.Tabs(selected=CHAT_TAB), _say(history, message), gr.skip())

    def on_select(hits: list, history: list, evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        return open_rank(hits, row[0] if row else None, history)

    def on_map(hits: list, history: list, evt: gr.EventData) -> tuple:
        return open_rank(hits, (evt._data or {}).get("rank"), history)

    # Gradio finds the event argument by its type hint, which it resolves in this module's
    # globals, where gradio (imported lazily) is not.
    on_select.__annotations__["evt"] = gr.SelectData
    on_map.__annotations__["evt"] = gr.EventData

    outputs = [ui.status, ui.map, ui.results, ui.geojson, ui.hits, ui.view]
    for event in (ui.query.submit, ui.search.click):
        event(on_search, [ui.query, ui.k], outputs, concurrency_id="region",
              concurrency_limit=1, show_progress_on=[ui.status])
    ui.build.click(on_build, None, ui.status, concurrency_id="region", concurrency_limit=1)
    opened = [picker, tabs, chat, ui.status]
    ui.results.select(on_select, [ui.hits, chat], opened)
    ui.map.click(on_map, [ui.hits, chat], opened)


def _chips_frame(rows: list[list]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=CHIP_COLUMNS)


def _results_frame(rows: list[list]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ---------------------------------------------------------------------- helpers
def _options(values: tuple) -> Options:
    """The settings panel's values as Options; InputError naming the field when one is not
    a number (ranges are checked by :meth:`Options.check`)."""
    (detector, planner, url, model, key, threshold, min_region, next_to, small, large,
     sam) = values
    return Options(
        detector=detector or "auto", planner=planner or "auto", llm_base_url=url or "",
        llm_model=model or "", llm_api_key=key or "",
        score_threshold=_number(threshold, FIELD_LABELS["score_threshold"]),
        min_region_m2=_number(min_region, FIELD_LABELS["min_region_m2"]),
        next_to_m=_number(next_to, FIELD_LABELS["next_to_m"]),
        small_max_m2=_number(small, FIELD_LABELS["small_max_m2"]),
        large_min_m2=_number(large, FIELD_LABELS["large_min_m2"]), sam=bool(sam),
    )


def _number(value: Any, what: str = "value") -> float | None:
    """A panel field as a float; None when blank; InputError naming ``what`` when it is not
    a finite number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{what} must be a finite number, got {value}")
    return number


def _text(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _gsd(value: Any) -> float | None:
    """The GSD field as metres per pixel (None when blank or 0); InputError naming the
    field when it is not a number from 0.01 to 10000."""
    v = _number(value, FIELD_LABELS["gsd"]) or None
    lo, hi = GSD_RANGE_M
    if v is not None and not lo <= v <= hi:
        raise InputError(f"{FIELD_LABELS['gsd']} must be from {lo:g} to {hi:g}, got {v:g}")
    return v


def _frame(rows: list[list]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=REGION_COLUMNS)


def _say(history: list, message: str) -> list:
    """``history`` with one more assistant message."""
    return list(history or []) + [{"role": "assistant", "content": message}]


def _messages(turn: Turn) -> list[dict]:
    """The chat messages of one turn: the program (collapsed) then the answer."""
    out: list[dict] = []
    if turn.program:
        answer = turn.answer
        title = f"Program ({answer.planner or 'planner'})" if answer is not None else "Program"
        out.append({"role": "assistant", "content": f"```python\n{turn.program.rstrip()}\n```",
                    "metadata": {"title": title, "status": "done"}})
    out.append({"role": "assistant", "content": turn.message})
    return out


def _welcome(catalog: Catalog) -> list[dict]:
    text = ("Ask a question about the selected image, for example *How many buildings are "
            "there?* or *What is the area covered by water?* Answers come with the regions "
            "they rest on (overlay and table), the program that computed them, and "
            "downloadable evidence.")
    if catalog.notes:
        text += "\n\n" + "\n".join(f"- {escape_markdown(n)}" for n in catalog.notes)
    return [{"role": "assistant", "content": text}]


def _show(controller: Controller, key: str | None, gsd_value: Any) -> tuple[Any, str, str | None]:
    """(overlay value, info line, None) for an image, or (None, message, message) when it
    cannot be opened."""
    try:
        image = controller.catalog.open(key, _gsd(gsd_value))
    except Exception as exc:  # noqa: BLE001 - shown in the chat, app stays up
        reason = str(exc) or ("out of memory" if isinstance(exc, MemoryError)
                              else type(exc).__name__)
        message = (f"Could not open **{escape_markdown(str(key))}**: "
                   f"{escape_markdown(app_text(reason))}")
        return None, message, message
    return overlay(image, None), describe(image), None


def weights_markdown(settings: Settings) -> str:
    """The model weights: a table (model, role, found or missing, the file used) and, below
    it, how to get each missing one (long texts stay out of the table's cells)."""
    from viper_rs.core.weights import auto_reason, find_weights

    lines = ["| model | role | status | file |", "|---|---|---|---|"]
    how: list[str] = []
    for entry in find_weights(settings).values():
        status = "found" if entry["available"] else entry["status"]
        where = entry["path"] or ("see below" if entry["note"] else "-")
        lines.append(f"| {_cell(entry['model'])} | {_cell(entry['role'])} | **{status}** | "
                     f"{_cell(where)} |")
        if entry["note"]:
            how.append(f"- {_cell(entry['model'])}: {_cell(app_text(str(entry['note'])))}")
    lines += ["", *how, "", f"Detector `auto`: {app_text(auto_reason(settings))}."]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """``text`` safe in a Markdown table cell (no column break, no HTML)."""
    return str(text).replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


#: Seconds the app may take to stop after SIGTERM/SIGINT before it exits regardless.
STOP_GRACE_S = 8.0


class _Stopper:
    """SIGTERM and SIGINT stop the app within seconds, whatever is running: the first kills
    the area workers and the sandboxes at once and closes the server (as Ctrl-C does); if
    the app has not exited :data:`STOP_GRACE_S` seconds later, or on a second signal, it
    exits at once (code 1)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.signum: int | None = None
        self.app: Any = None  # the Blocks, once launched

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: no more waiting
            os._exit(1)
        self.signum = signum
        log.info("%s: stopping the app", signal.Signals(signum).name)
        timer = threading.Timer(STOP_GRACE_S, self._force)
        timer.daemon = True
        timer.start()
        self.controller.jobs.stop_all()  # running area questions end now
        server = getattr(self.app, "server", None)
        if server is not None:  # do not wait for open connections (event streams) to end
            server.force_exit = True
        _interrupt(signum, frame)

    def _force(self) -> None:
        log.error("the app did not stop within %g s: exiting regardless", STOP_GRACE_S)
        logging.shutdown()
        os._exit(1)


def default_folders(repo: Path | None = None) -> list[Path]:
    """``VIPER_RS_IMAGE_FOLDER`` (``:``-separated), else ``../shared/data`` when present."""
    env = os.environ.get("VIPER_RS_IMAGE_FOLDER")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    repo = repo or Path.cwd()
    shared = (repo / ".." / "shared" / "data").resolve()
    return [shared] if shared.is_dir() else []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of ``python app.py``."""
    p = argparse.ArgumentParser(prog="app.py", description=TITLE)
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--folder", type=Path, action="append", default=None,
                   help="folder of images to list (repeatable; default: ../shared/data "
                   "when present, or VIPER_RS_IMAGE_FOLDER)")
    p.add_argument("--detector", choices=DETECTORS, default=None)
    p.add_argument("--planner", choices=PLANNERS, default=None)
    p.add_argument("--no-warmup", action="store_true",
                   help="do not build the models and open the demo image before serving")
    p.add_argument("--index", type=Path, default=None,
                   help="chip index for the Region search tab (built there from the folders "
                   "when missing; default: $VIPER_RS_INDEX, else one per folder list under "
                   "the cache folder)")
    p.add_argument("--index-chip-m", type=float, default=DEFAULT_CHIP_M,
                   help=f"chip side in metres of an index the app builds (default "
                   f"{DEFAULT_CHIP_M:g})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, repo: Path | None = None) -> None:
    """Launch the app (blocks until interrupted)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    configure_logging(logging.INFO)  # every record's message made safe (file names in it)
    args = parse_args(argv)
    folders = args.folder if args.folder is not None else default_folders(repo)
    settings = Settings.from_env(detector=args.detector, planner=args.planner)
    catalog = Catalog(folders, settings=settings)
    region = RegionSearch.for_folders(folders, settings, args.index, args.index_chip_m)
    controller = Controller(catalog, settings, region=region)
    atexit.register(controller.close)
    stopper = _Stopper(controller)
    stopper.install()  # close like Ctrl-C: workers, evidence folder
    defaults = Options(detector=settings.detector, planner=settings.planner, sam=settings.sam,
                       score_threshold=settings.score_threshold)
    try:
        if not args.no_warmup:
            controller.warm_up(defaults)
        app = stopper.app = build_app(controller, defaults)
        log.info("%d images listed (%s)", len(catalog.keys),
                 ", ".join(str(f) for f in folders) or "demo scenes only")
        log.info("region search index: %s", region.path)
        app.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, css=CSS,
            allowed_paths=[str(controller.out_dir)], footer_links=[], max_file_size=MAX_UPLOAD,
        )
    except KeyboardInterrupt:
        if stopper.signum is None:
            raise
    finally:
        controller.close()
    if stopper.signum is not None:
        # Everything is closed; the interpreter's own teardown (native libraries' threads)
        # can take seconds more, which a stop request does not wait for.
        log.info("stopped (%s)", signal.Signals(stopper.signum).name)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)
