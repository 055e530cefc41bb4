"""The LLM planner through the real ``openai`` client against a loopback chat-completions
server (tests/fake_openai.py): prompt, extraction, repair, retries, errors, cache, ``auto``,
and the worked examples of the prompt run on a synthetic scene with the oracle detector."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fake_openai import FakeOpenAI, Reply
from viper_rs import tools
from viper_rs.agent import Agent
from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, PlanningError, ValidationError
from viper_rs.planning import AutoPlanner, LLMPlanner, RulePlanner, build_planner
from viper_rs.planning.auto import OFFLINE
from viper_rs.planning.cache import ProgramCache, cache_key, question_key
from viper_rs.planning.extract import extract_program, infer_kind
from viper_rs.planning.prompting import (
    PROMPTS_DIR,
    Prompt,
    load_examples,
    prompt_hash,
    render_prompt,
)
from viper_rs.sandbox import Limits, Sandbox, validate_program
from viper_rs.synthetic import make_scene
from viper_rs.vision.oracle import OracleDetector

COUNT_BUILDINGS = "def execute_command(image):\n    return count(\"building\")\n"
FENCED = f"Sure! Here is the program:\n\n```python\n{COUNT_BUILDINGS}```\n\nIt counts buildings."


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=0)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(Limits(wall_s=5.0), workers=1)
    yield box
    box.close()


@pytest.fixture
def fake():
    with FakeOpenAI(models=["m"]) as server:
        yield server


@pytest.fixture
def settings(fake, tmp_path) -> Settings:
    return Settings(llm_base_url=fake.base_url, llm_model="m", cache_dir=tmp_path,
                    llm_timeout_s=3.0, llm_retries=1)


def make_agent(settings, scene, sandbox, planner="llm") -> Agent:
    return Agent(settings, detector=OracleDetector(scene, settings), planner=planner,
                 sandbox=sandbox)


def truth_count(scene, *classes: str) -> int:
    return sum(o.cls in classes for o in scene.objects)


BUILDINGS = ("residential building", "commercial building")


# --------------------------------------------------------------------------- prompt


def test_prompt_has_api_examples_and_is_reproducible():
    a, b = Prompt(), Prompt()
    assert a.system == b.system and a.hash == b.hash == prompt_hash()
    assert a.messages("How many ponds?") == b.messages("How many ponds?")
    for tool in tools.REGISTRY:
        assert tool.signature_text() in a.system
    assert "{api}" not in a.system and "{examples}" not in a.system
    assert a.messages("  How many\n ponds? ")[1]["content"] == "Question: How many ponds?"
    text = render_prompt("How many ponds?")
    assert text.startswith(a.system) and text.endswith("Question: How many ponds?")
    info = a.info
    assert info.chars == len(a.system) and info.approx_tokens == round(info.chars / 4)
    assert 4000 < info.chars < 40000


def test_prompt_hash_changes_with_any_template(tmp_path):
    base = Prompt().hash
    for name in ("program.md", "examples.md", "question.md", "repair.md"):
        d = tmp_path / name.replace(".", "_")
        shutil.copytree(PROMPTS_DIR, d)
        (d / name).write_text((d / name).read_text() + "\nOne more line.\n")
        assert Prompt(prompts_dir=d).hash != base, name


def test_repair_message_carries_program_and_error():
    text = Prompt().repair("How many ponds?", "def execute_command(image):\n    return 1/0\n",
                           "sandbox", "ZeroDivisionError: division by zero")
    assert "return 1/0" in text and "ZeroDivisionError: division by zero" in text
    assert "How many ponds?" in text and "(sandbox)" in text


# --------------------------------------------------------------------------- worked examples


def test_at_least_twelve_examples_covering_every_kind():
    examples = load_examples()
    assert len(examples) >= 12
    kinds = {infer_kind(e.program) for e in examples}
    assert {"presence", "count", "area", "comparison", "other"} <= kinds
    text = " ".join(e.question.lower() for e in examples)
    for phrase in ("how much of this tile is parking next to the river",
                   "which is larger, the tree cover or the grass",
                   "any buildings larger than 500 m2 near water",
                   "small", "big", "left of", "next to"):
        assert phrase in text, phrase


def test_examples_validate_and_run_on_the_oracle_scene(scene, sandbox):
    names = tools.REGISTRY.names()
    settings = Settings()
    with Agent(settings, detector=OracleDetector(scene, settings), planner="rules",
               sandbox=sandbox) as agent:
        for ex in load_examples():
            validate_program(ex.program, names)
            answer = agent.run_program(scene.image, ex.program, question=ex.question,
                                       kind=infer_kind(ex.program))
            assert answer.error is None, (ex.question, answer.error)
            assert answer.value is not None
            called = {e["tool"] for e in answer.trace}
            assert called <= set(names)
    # spot checks against the ground truth
    by_q = {ex.question: ex.program for ex in load_examples()}
    with Agent(settings, detector=OracleDetector(scene, settings), planner="rules",
               sandbox=sandbox) as agent:
        a = agent.run_program(scene.image, by_q["How many buildings are there?"], kind="count")
        assert a.value == truth_count(scene, *BUILDINGS)
        a = agent.run_program(scene.image, by_q["Is there a road in the image?"])
        assert a.value is (truth_count(scene, "road") > 0)


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("reply, form", [
    (COUNT_BUILDINGS, "bare"),
    (f"```python\n{COUNT_BUILDINGS}```", "fenced"),
    (FENCED, "fenced"),
    (f"```\n{COUNT_BUILDINGS}```", "fenced"),
    (f"```py\n{COUNT_BUILDINGS}", "fenced"),  # unterminated fence (cut at the token limit)
    (f"The answer needs a count.\n{COUNT_BUILDINGS}\nThis returns the number.", "prose"),
    (f"<think>count them\n```python\nreturn 0\n```</think>\n```python\n{COUNT_BUILDINGS}```",
     "fenced"),
    (f"First:\n```python\nx = 1\n```\nThen:\n```python\n{COUNT_BUILDINGS}```", "fenced"),
    ("    " + COUNT_BUILDINGS.replace("\n    ", "\n        "), "bare"),  # indented
])
def test_extract_program_forms(reply, form):
    ex = extract_program(reply)
    assert ex.form == form
    assert ex.program == COUNT_BUILDINGS
    validate_program(ex.program, tools.REGISTRY.names())


def test_extract_drops_usage_around_the_function():
    reply = (f"```python\n{COUNT_BUILDINGS}\nprint(execute_command(image))\n"
             "result = execute_command(image)\n"
             "if __name__ == '__main__':\n    execute_command(None)\n```")
    ex = extract_program(reply)
    assert ex.program == COUNT_BUILDINGS
    assert len(ex.dropped) == 3


@pytest.mark.parametrize("reply", ["", "   ", "I cannot help with that.", "42",
                                   "<think>long thoughts cut off"])
def test_extract_garbage_is_a_validation_error(reply):
    with pytest.raises(ValidationError, match="no program"):
        extract_program(reply)


def test_extract_code_without_entry_is_left_to_the_validator():
    ex = extract_program("```python\ndef solve(image):\n    return 1\n```")
    with pytest.raises(ValidationError, match="execute_command"):
        validate_program(ex.program, tools.REGISTRY.names())


@pytest.mark.parametrize("body, kind", [
    ('return exists("road")', "presence"),
    ('return count(find("road"))', "count"),
    ('return len(find("road"))', "count"),
    ('return area("tree")', "area"),
    ('return round(area("tree"), 1)', "area"),
    ('return compare("a", "b", "more")', "comparison"),
    ('return area("tree") > area("grass area")', "comparison"),
    ('return count("building") > 3', "presence"),
    ('x = area("tree")\n    return x + area("grass area")', "area"),
    ('b = find("building")\n    return sum(r.area_m2 for r in b) / len(b)', "area"),
    ('return 100.0 * area("parking") / (image.width * image.height)', "other"),
    ('return "top"', "other"),
    ('if not find("x"):\n        return 0.0\n    return max(r.area_m2 for r in find("x"))', "area"),
    ('return 3', "other"),
])
def test_infer_kind(body, kind):
    assert infer_kind(f"def execute_command(image):\n    {body}\n") == kind


# --------------------------------------------------------------------------- end to end


def test_fenced_reply_answers_and_request_is_the_prompt(fake, settings, scene, sandbox):
    fake.reply(FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings can you see?")
    assert answer.error is None, answer.error
    assert answer.value == truth_count(scene, *BUILDINGS) and answer.kind == "count"
    assert answer.planner == "llm" and answer.program == COUNT_BUILDINGS
    [attempt] = answer.attempts
    assert attempt["cached"] is False and attempt["error"] is None
    assert attempt["prompt_hash"] == prompt_hash() and attempt["response"] == FENCED
    [body] = fake.chat_requests
    assert body["model"] == "m" and body["temperature"] == 0
    assert body["max_tokens"] == settings.llm_max_tokens
    assert body["messages"] == Prompt().messages("How many buildings can you see?")
    assert any(prompt_hash() in n for n in answer.notes)
    d = json.loads(answer.to_json())
    assert d["attempts"][0]["program"] == COUNT_BUILDINGS


def test_failing_program_is_repaired_from_its_error(fake, settings, scene, sandbox):
    bad = "def execute_command(image):\n    return count(\"flux capacitor\")\n"
    fake.reply(f"```python\n{bad}```", FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings are in the tile?")
    assert answer.error is None and answer.value == truth_count(scene, *BUILDINGS)
    first, second = answer.attempts
    assert first["error"]["type"] == "tool" and "flux capacitor" in first["error"]["message"]
    assert first["program"] == bad and second["error"] is None and second["repair"] == 1
    req1, req2 = fake.chat_requests
    assert len(req2["messages"]) == len(req1["messages"]) + 2
    assert req2["messages"][2]["role"] == "assistant"
    last = req2["messages"][-1]
    assert last["role"] == "user"
    assert first["error"]["message"] in last["content"] and 'count("flux capacitor")' in last["content"]
    assert any("after 2 attempts" in n for n in answer.notes)


def test_validation_error_is_repaired(fake, settings, scene, sandbox):
    fake.reply(f"```python\nimport os\n{COUNT_BUILDINGS}```", COUNT_BUILDINGS)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error is None
    assert answer.attempts[0]["error"]["type"] == "validation"
    assert "import" in fake.chat_requests[1]["messages"][-1]["content"]


def test_runtime_exception_and_timeout_are_repaired(fake, settings, scene, sandbox):
    crash = "def execute_command(image):\n    return 1 / (count(\"building\") - count(\"building\"))\n"
    loop = "def execute_command(image):\n    n = 0\n    while True:\n        n += 1\n"
    fake.reply(crash, loop, COUNT_BUILDINGS)
    settings = settings.model_copy(update={"llm_repair_attempts": 2})
    box = Sandbox(Limits(wall_s=1.0, cpu_s=1.0), workers=1)
    try:
        with make_agent(settings, scene, box) as agent:
            answer = agent.ask(scene.image, "How many buildings are here?")
    finally:
        box.close()
    assert [a["error"]["type"] if a["error"] else None for a in answer.attempts] == [
        "sandbox", "timeout", None]
    assert "ZeroDivisionError" in fake.chat_requests[1]["messages"][-1]["content"]
    assert "limit" in fake.chat_requests[2]["messages"][-1]["content"]
    assert answer.error is None and answer.value == truth_count(scene, *BUILDINGS)


def test_garbage_output_is_sent_back_then_gives_up(fake, settings, scene, sandbox):
    fake.reply("I am not sure what you mean.", "Still no code, sorry.", "Nope.")
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "Tell me about this tile")
    assert answer.error["type"] == "validation" and "no program" in answer.error["message"]
    assert answer.value is None and answer.answer.startswith("Could not answer")
    assert len(answer.attempts) == 1 + settings.llm_repair_attempts == len(fake.chat_requests)
    assert [a["response"] for a in answer.attempts] == [
        "I am not sure what you mean.", "Still no code, sorry.", "Nope."]
    assert "I am not sure what you mean." in fake.chat_requests[1]["messages"][-1]["content"]
    assert not list((settings.cache_dir / "programs").glob("*.json"))  # failures are not cached


def test_garbage_then_code(fake, settings, scene, sandbox):
    fake.reply("Let me think about it.", FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error is None and len(answer.attempts) == 2


def test_repair_bound_zero(fake, settings, scene, sandbox):
    fake.reply("no code", FENCED)
    settings = settings.model_copy(update={"llm_repair_attempts": 0})
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error["type"] == "validation" and len(fake.chat_requests) == 1


def test_rate_limit_then_success(fake, settings, scene, sandbox):
    fake.reply(Reply(status=429, message="slow down", headers={"retry-after-ms": "20"}),
               Reply(status=503, message="overloaded", headers={"retry-after-ms": "20"}), FENCED)
    settings = settings.model_copy(update={"llm_retries": 2})
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error is None and len(fake.chat_requests) == 3
    assert len(answer.attempts) == 1


def test_rate_limit_exhausted_is_a_clear_failed_answer(fake, settings, scene, sandbox):
    fake.reply(*[Reply(status=429, message="quota", headers={"retry-after-ms": "10"})] * 2)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error["type"] == "planning"
    assert "429" in answer.error["message"] and fake.base_url in answer.error["message"]
    assert "quota" in answer.error["message"] and len(fake.chat_requests) == 2
    assert answer.attempts[0]["error"] == answer.error


def test_timeout_then_success_and_timeout_failure(fake, settings, scene, sandbox):
    settings = settings.model_copy(update={"llm_timeout_s": 0.3, "llm_retries": 1})
    fake.reply(Reply(content=COUNT_BUILDINGS, delay_s=1.0), FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error is None and len(fake.chat_requests) == 2
    settings = settings.model_copy(update={"llm_retries": 0, "llm_cache": False})
    fake.reply(Reply(content=COUNT_BUILDINGS, delay_s=1.0))
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error["type"] == "planning"
    assert "did not answer within 0.3 s" in answer.error["message"]


def test_unknown_model_names_the_model_and_what_the_server_has(fake, settings, scene, sandbox):
    settings = settings.model_copy(update={"llm_model": "no-such-model"})
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error["type"] == "config"
    msg = answer.error["message"]
    assert "'no-such-model'" in msg and "offers: m" in msg and "does not exist" in msg
    assert len(fake.chat_requests) == 1  # a 404 is not retried; the model list is asked once
    assert [r["method"] for r in fake.requests] == ["POST", "GET"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint(tmp_path, scene, sandbox):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    settings = Settings(llm_base_url=url, llm_model="m", cache_dir=tmp_path, llm_retries=0)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error["type"] == "planning"
    assert url in answer.error["message"] and "cannot reach" in answer.error["message"]


def test_openai_without_key_is_a_config_error(monkeypatch, tmp_path, scene, sandbox):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = Settings(llm_model="gpt-4o-mini", cache_dir=tmp_path)
    planner = LLMPlanner(settings)
    assert planner.base_url == "https://api.openai.com/v1"
    with make_agent(settings, scene, sandbox, planner=planner) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error["type"] == "config" and "OPENAI_API_KEY" in answer.error["message"]
    assert planner.requests == 0


def test_keys_sent_and_never_serialised(monkeypatch, fake, settings, scene, sandbox):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake.reply(FENCED, FENCED)
    with make_agent(settings.model_copy(update={"llm_cache": False}), scene, sandbox) as agent:
        agent.ask(scene.image, "How many buildings?")
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer not-needed"
    secret = Settings.from_env({"VIPER_RS_LLM_API_KEY": "sk-very-secret"}, llm_base_url=fake.base_url,
                               llm_model="m", cache_dir=settings.cache_dir, llm_cache=False)
    assert "sk-very-secret" not in repr(secret) + secret.model_dump_json() + str(secret.model_dump())
    with make_agent(secret, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in answer.to_json()


def test_bad_base_url_and_missing_model():
    with pytest.raises(ConfigError, match="not an http"):
        LLMPlanner(Settings(llm_base_url="localhost:11434", llm_model="m"))
    with pytest.raises(ConfigError, match="names no model"):
        build_planner("llm", Settings(llm_base_url="http://127.0.0.1:1/v1"))
    with pytest.raises(ConfigError, match="LLM planner not configured"):
        build_planner("llm", Settings())


def test_max_tokens_rejected_switches_to_max_completion_tokens(fake, settings, scene, sandbox):
    def strict(body):
        if "max_tokens" in body:
            return Reply(status=400, message="Unsupported parameter: 'max_tokens' is not supported "
                         "with this model. Use 'max_completion_tokens' instead.")
        return FENCED

    fake.reply(strict, strict)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error is None
    first, second = fake.chat_requests
    assert "max_tokens" in first and second["max_completion_tokens"] == settings.llm_max_tokens
    assert any("max_completion_tokens" in n for n in answer.notes)


# --------------------------------------------------------------------------- cache


def test_cache_hit_makes_no_request(fake, settings, scene, sandbox):
    fake.reply(FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        first = agent.ask(scene.image, "How many buildings can you see?")
        n = len(fake.requests)
        t0 = time.perf_counter()
        again = agent.ask(scene.image, "  how many BUILDINGS can you see ")
        cached_ms = (time.perf_counter() - t0) * 1000
    assert len(fake.requests) == n == 1
    assert again.error is None and again.value == first.value and again.program == first.program
    assert again.attempts[0]["cached"] is True and first.attempts[0]["cached"] is False
    assert any("from the cache" in note for note in again.notes)
    assert again.timings["plan_ms"] < first.timings["plan_ms"] and cached_ms < 5000
    files = list((settings.cache_dir / "programs").glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["program"] == COUNT_BUILDINGS and record["key"]["prompt_hash"] == prompt_hash()
    assert record["key"]["question"] == "how many buildings can you see"


def test_cache_is_bypassed_and_keyed_by_model(fake, settings, scene, sandbox):
    fake.models.append("other")
    fake.reply(FENCED, FENCED, FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        agent.ask(scene.image, "How many buildings?")
    off = settings.model_copy(update={"llm_cache": False})
    with make_agent(off, scene, sandbox) as agent:
        assert agent.ask(scene.image, "How many buildings?").attempts[0]["cached"] is False
    other = settings.model_copy(update={"llm_model": "other"})
    with make_agent(other, scene, sandbox) as agent:
        assert agent.ask(scene.image, "How many buildings?").attempts[0]["cached"] is False
    assert len(fake.chat_requests) == 3


def test_repaired_program_is_cached_as_the_final_one(fake, settings, scene, sandbox):
    fake.reply("```python\ndef execute_command(image):\n    return count(\"warp core\")\n```", FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        agent.ask(scene.image, "How many buildings?")
        again = agent.ask(scene.image, "How many buildings?")
    assert len(fake.chat_requests) == 2
    assert again.attempts[0]["cached"] and again.program == COUNT_BUILDINGS


def test_failing_cached_program_is_repaired_and_replaced(fake, settings, scene, sandbox):
    bad = "def execute_command(image):\n    return count(\"warp core\")\n"
    cache = ProgramCache(settings.cache_dir / "programs")
    key = cache_key(settings.llm_base_url, "m", prompt_hash(), "How many buildings?")
    cache.put(key, {"program": bad, "kind": "count"})
    fake.reply(FENCED)
    with make_agent(settings, scene, sandbox) as agent:
        answer = agent.ask(scene.image, "How many buildings?")
    assert answer.error is None and [a["cached"] for a in answer.attempts] == [True, False]
    assert f"```python\n{bad.rstrip()}\n```" == fake.chat_requests[0]["messages"][2]["content"]
    assert cache.get(key)["program"] == COUNT_BUILDINGS


def test_cache_ignores_corrupt_files(tmp_path):
    cache = ProgramCache(tmp_path)
    key = cache_key("http://x/v1", "m", "h", "Q?")
    cache.path(key).parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_text("{not json")
    assert cache.get(key) is None
    cache.put(key, {"program": "p"})
    assert cache.get(key)["program"] == "p"
    assert not list(tmp_path.glob(".tmp-*"))
    assert question_key(" Is  there a Road?? ") == "is there a road"


# --------------------------------------------------------------------------- auto


def test_auto_offline_refuses_clearly(scene, sandbox, tmp_path):
    planner = build_planner("auto", Settings(cache_dir=tmp_path))
    assert isinstance(planner, AutoPlanner) and isinstance(planner, RulePlanner)
    assert planner.plan("Is there a road?").planner == "rules"
    with pytest.raises(PlanningError, match="cannot plan this question offline") as info:
        planner.plan("Which is larger, the tree cover or the grass?")
    assert str(info.value).startswith(OFFLINE)
    with make_agent(Settings(cache_dir=tmp_path), scene, sandbox, planner="auto") as agent:
        answer = agent.ask(scene.image, "Which is larger, the tree cover or the grass?")
    assert answer.error["type"] == "planning" and OFFLINE in answer.error["message"]
    assert len(answer.attempts) == 1 and answer.attempts[0]["program"] is None


def test_auto_uses_rules_then_llm(fake, settings, scene, sandbox):
    fake.reply("```python\ndef execute_command(image):\n"
               "    return \"trees\" if area(\"tree\") > area(\"grass area\") else \"grass\"\n```")
    with make_agent(settings, scene, sandbox, planner="auto") as agent:
        assert agent.planner.name == "auto"
        ruled = agent.ask(scene.image, "How many buildings are there?")
        assert ruled.planner == "rules" and not fake.chat_requests
        free = agent.ask(scene.image, "Which is larger, the tree cover or the grass?")
        # a rule plan that fails is not sent to the LLM
        failed = agent.ask(scene.image, "Is there a spaceship?")
    assert free.error is None and free.planner == "llm" and free.value in ("trees", "grass")
    assert free.notes[0].startswith("auto:") or any(n.startswith("auto:") for n in free.notes)
    assert failed.error["type"] == "tool" and len(failed.attempts) == 1
    assert len(fake.chat_requests) == 1


# --------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIPER_RS_", "OPENAI_"))}
    return subprocess.run([sys.executable, "-m", "viper_rs", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=env)


def test_cli_ask_llm_repairs_then_serves_from_cache(fake, tmp_path, scene):
    from viper_rs.core.raster_write import write_geotiff

    tif = write_geotiff(scene.image, tmp_path / "scene.tif")
    fake.reply("```python\ndef execute_command(image):\n    return exists(\"flux capacitor\")\n```",
               "```python\ndef execute_command(image):\n    return exists(\"water area\")\n```")
    args = ["ask", str(tif), "Is there any water in this tile?", "--planner", "llm",
            "--llm-base-url", fake.base_url, "--llm-model", "m", "--json",
            "--detector", "spectral", "--cache-dir", str(tmp_path / "cache")]
    p = _cli(*args)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["error"] is None and out["kind"] == "presence" and out["planner"] == "llm"
    assert [a["error"]["type"] if a["error"] else None for a in out["attempts"]] == ["tool", None]
    assert "flux capacitor" in fake.chat_requests[1]["messages"][-1]["content"]
    n = len(fake.requests)
    p = _cli(*args)
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout)
    assert len(fake.requests) == n
    assert again["attempts"][0]["cached"] is True and again["value"] == out["value"]
    p = _cli(*args, "--no-cache")
    assert p.returncode == 1 and len(fake.chat_requests) == 3  # script exhausted: clear error
    err = json.loads(p.stdout)["error"]
    assert err["type"] == "planning" and "500" in err["message"]
    assert "Traceback" not in p.stderr


def test_cli_prompt_command():
    p = _cli("prompt", "How many ponds?", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["prompt_hash"] == prompt_hash()
    assert out["messages"] == Prompt().messages("How many ponds?")
    assert out["prompt_chars"] == len(Prompt().system)


def test_examples_file_is_plain_text():
    assert Path(PROMPTS_DIR / "examples.md").read_text().count("Question:") == len(load_examples())


def test_temperature_rejected_is_dropped_but_other_400s_are_errors(fake, settings, scene, sandbox):
    def no_temperature(body):
        if "temperature" in body:
            return Reply(status=400, message="Unsupported value: 'temperature' does not support 0 "
                         "with this model. Only the default (1) value is supported.")
        return FENCED

    fake.reply(no_temperature, no_temperature,
               Reply(status=400, message="max_tokens is too large: 1024 > 512"))
    with make_agent(settings, scene, sandbox) as agent:
        ok = agent.ask(scene.image, "How many buildings?")
        bad = agent.ask(scene.image, "How many roads?")
    assert ok.error is None and "temperature" not in fake.chat_requests[1]
    assert bad.error["type"] == "planning" and "HTTP 400" in bad.error["message"]
    assert "too large" in bad.error["message"] and len(fake.chat_requests) == 3
