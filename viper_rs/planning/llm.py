"""LLM planner: ViperGPT-style program synthesis over any OpenAI-compatible endpoint.

:class:`ChatClient` wraps the ``openai`` client (OpenAI, vLLM, Ollama, a llama.cpp server...)
with temperature 0, a token bound, a request timeout, retries with backoff on rate limits,
5xx and timeouts, and errors that say what to fix. :class:`LLMPlanner` sends the prompt of
:mod:`viper_rs.planning.prompting`, extracts the program from the reply, sends failures back for a
repaired program, and caches programs that ran without error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, PlanningError, ValidationError
from viper_rs.planning.base import Plan
from viper_rs.planning.cache import ProgramCache, cache_key
from viper_rs.planning.extract import extract_program, infer_kind
from viper_rs.planning.prompting import PROMPTS_DIR, Prompt, clean_question
from viper_rs.tools.registry import REGISTRY, Registry

log = logging.getLogger(__name__)

#: Endpoint used when a model is configured without a base URL.
OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Key sent to endpoints that need none (Ollama, vLLM, llama.cpp ignore it).
PLACEHOLDER_KEY = "not-needed"
#: Hosts that always need a real key.
_KEYED_HOSTS = ("api.openai.com",)
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


@dataclass
class Completion:
    """One chat-completion reply: text, the model that answered, why it stopped, token
    usage and the request time in ms."""

    text: str
    model: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    ms: float = 0.0
    notes: list[str] = field(default_factory=list)


def llm_configured(settings: Settings | None) -> bool:
    """Whether the settings name an LLM model (the endpoint defaults to OpenAI's)."""
    return bool(settings is not None and settings.llm_model)


def resolve_base_url(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """The endpoint: ``llm_base_url``, else ``OPENAI_BASE_URL``, else api.openai.com.

    Raises ConfigError for anything but an http(s) URL with a host.
    """
    env = os.environ if env is None else env
    url = (settings.llm_base_url or env.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"--llm-base-url {url!r} is not an http(s) URL; e.g. http://localhost:11434/v1 "
            "(Ollama), http://localhost:8000/v1 (vLLM), http://localhost:8080/v1 (llama.cpp)"
        )
    return url.rstrip("/")


def resolve_api_key(base_url: str, settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """The key: ``llm_api_key``, else ``OPENAI_API_KEY``, else a placeholder for endpoints
    that need none. Raises ConfigError for api.openai.com without a key."""
    env = os.environ if env is None else env
    if settings.llm_api_key is not None and settings.llm_api_key.get_secret_value():
        return settings.llm_api_key.get_secret_value()
    if env.get("OPENAI_API_KEY"):
        return env["OPENAI_API_KEY"]
    host = (urlparse(base_url).hostname or "").lower()
    if any(host == h or host.endswith("." + h) for h in _KEYED_HOSTS):
        raise ConfigError(
            f"no API key for {base_url}: set OPENAI_API_KEY (or VIPER_RS_LLM_API_KEY), or point "
            "--llm-base-url at a local server (Ollama, vLLM, llama.cpp) that needs none"
        )
    return PLACEHOLDER_KEY


class ChatClient:
    """Chat completions from one OpenAI-compatible endpoint and model.

    Temperature 0 and ``max_tokens`` are sent; a server that rejects either (some OpenAI
    reasoning models) is asked again without it, once, and the client remembers.
    Every failure is raised as ConfigError (key, model, URL) or PlanningError (network,
    rate limit, server), naming the endpoint.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        settings: Settings,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.settings = settings
        self.timeout_s = settings.llm_timeout_s
        self.retries = settings.llm_retries
        self.params: dict[str, Any] = {"temperature": 0.0, "max_tokens": settings.llm_max_tokens}
        self._env = env
        self._client: Any = None
        self._lock = threading.Lock()
        import openai  # noqa: F401  (imported here so the first request's time is the request's)

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                import openai

                key = resolve_api_key(self.base_url, self.settings, self._env)
                self._client = openai.OpenAI(
                    api_key=key,
                    base_url=self.base_url,
                    timeout=openai.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
                    max_retries=self.retries,
                )
            return self._client

    def complete(self, messages: Sequence[Mapping[str, str]]) -> Completion:
        """The model's reply to ``messages``."""
        client = self._openai()
        notes: list[str] = []
        t0 = time.perf_counter()
        for _ in range(3):
            try:
                response = client.chat.completions.create(
                    model=self.model, messages=list(messages), **self.params
                )
                break
            except Exception as exc:  # noqa: BLE001 - mapped to typed errors below
                note = self._adapt(exc)
                if note is None:
                    raise self._error(exc, client) from None
                notes.append(note)
        else:  # pragma: no cover - _adapt changes at most two parameters
            raise PlanningError(f"the LLM endpoint {self.base_url} kept rejecting the request")
        ms = round((time.perf_counter() - t0) * 1000, 3)
        choices = getattr(response, "choices", None)
        if choices is None:
            raise PlanningError(
                f"{self.base_url} did not answer with an OpenAI chat completion (got "
                f"{type(response).__name__}); is the base URL right (it usually ends in /v1)?"
            )
        text, finish = "", None
        if choices:
            message = choices[0].message
            text = (message.content if message is not None else None) or ""
            finish = choices[0].finish_reason
        usage = getattr(response, "usage", None)
        usage_d = None
        if usage is not None:
            usage_d = {k: v for k, v in (("prompt_tokens", usage.prompt_tokens),
                                         ("completion_tokens", usage.completion_tokens),
                                         ("total_tokens", usage.total_tokens))
                       if isinstance(v, int)}
        if finish == "length":
            notes.append(f"the reply was cut at the token limit ({self.settings.llm_max_tokens})")
        return Completion(text, getattr(response, "model", None), finish, usage_d, ms, notes)

    def _adapt(self, exc: Exception) -> str | None:
        """Drop a request parameter the server rejects; a note, or None if not that case."""
        import openai

        if not isinstance(exc, openai.BadRequestError):
            return None
        message = _message(exc).lower()
        refused = any(w in message for w in ("unsupported", "not supported", "does not support"))
        if "max_tokens" in self.params and "max_tokens" in message and (
            refused or "max_completion_tokens" in message
        ):
            self.params["max_completion_tokens"] = self.params.pop("max_tokens")
            return "the model wants max_completion_tokens instead of max_tokens"
        if "temperature" in self.params and "temperature" in message and (
            refused or "only the default" in message
        ):
            del self.params["temperature"]
            return "the model does not accept temperature 0; its default temperature was used"
        return None

    def _error(self, exc: Exception, client: Any) -> ConfigError | PlanningError:
        import openai

        url, tries = self.base_url, self.retries + 1
        msg = _message(exc)
        if isinstance(exc, openai.APITimeoutError):
            return PlanningError(
                f"the LLM endpoint {url} did not answer within {self.timeout_s:g} s "
                f"({tries} tr{'y' if tries == 1 else 'ies'}); raise --llm-timeout or check the server"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = f"{type(cause).__name__}: {cause}" if cause else msg
            return PlanningError(f"cannot reach the LLM endpoint {url} ({why}); is the server running?")
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ConfigError(
                f"the LLM endpoint {url} rejected the API key (HTTP {exc.status_code}: {msg}); "
                "set OPENAI_API_KEY or VIPER_RS_LLM_API_KEY"
            )
        if isinstance(exc, openai.NotFoundError):
            return self._not_found(msg, client)
        if isinstance(exc, openai.RateLimitError):
            return PlanningError(
                f"the LLM endpoint {url} is rate limiting (HTTP 429) after {tries} "
                f"tr{'y' if tries == 1 else 'ies'} with backoff: {msg}"
            )
        if isinstance(exc, openai.APIStatusError):
            return PlanningError(
                f"the LLM endpoint {url} failed with HTTP {exc.status_code} (model {self.model!r}, "
                f"{tries} tr{'y' if tries == 1 else 'ies'}): {msg}"
            )
        return PlanningError(f"unexpected reply from the LLM endpoint {url}: {type(exc).__name__}: {msg}")

    def _not_found(self, msg: str, client: Any) -> ConfigError:
        """A 404: an unknown model (listed against the server's models) or a wrong URL."""
        available: list[str] | None = None
        try:
            listing = client.with_options(max_retries=0, timeout=min(5.0, self.timeout_s)).models.list()
            available = sorted(str(m.id) for m in listing.data)
        except Exception:  # noqa: BLE001 - the listing is only a hint
            available = None
        if available is not None and self.model not in available:
            shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
            return ConfigError(
                f"unknown model {self.model!r} at {self.base_url} ({msg}); the server offers: "
                f"{shown or 'no models'}"
            )
        return ConfigError(
            f"the LLM endpoint {self.base_url} answered 404 for model {self.model!r} ({msg}); check "
            "the model name and that the base URL ends in /v1 (e.g. http://localhost:11434/v1)"
        )


def _message(exc: Exception) -> str:
    """The server's error message (OpenAI-style ``{"error": {"message"}}``) or the exception text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        if isinstance(inner, str):
            return inner[:500]
    return str(exc)[:500]


class LLMPlanner:
    """Programs written by a model behind an OpenAI-compatible endpoint.

    ``plan`` serves a cached program when there is one (no request), else asks the model;
    ``repair`` sends the failed programs and their errors back; ``accept`` caches a
    program that ran without error. ``requests`` counts chat requests made.
    """

    name = "llm"

    def __init__(
        self,
        settings: Settings,
        *,
        client: ChatClient | None = None,
        cache: ProgramCache | None = None,
        registry: Registry = REGISTRY,
        prompts_dir: Path = PROMPTS_DIR,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not settings.llm_model:
            raise ConfigError("LLM planner not configured: pass --llm-base-url and --llm-model")
        self.settings = settings
        self.model = settings.llm_model
        self.base_url = resolve_base_url(settings, env)
        self.client = client or ChatClient(self.base_url, self.model, settings, env)
        self.prompt = Prompt(registry, prompts_dir)
        if cache is None and settings.llm_cache:
            cache = ProgramCache(Path(settings.cache_dir) / "programs")
        self.cache = cache
        self.requests = 0

    @property
    def header(self) -> str:
        """One line naming model, endpoint and prompt version."""
        info = self.prompt.info
        return (f"llm planner: {self.model} at {self.base_url}; prompt {info.hash} "
                f"({info.chars} chars, ~{info.approx_tokens} tokens)")

    def _key(self, question: str) -> dict[str, Any]:
        return cache_key(self.base_url, self.model, self.prompt.hash, question)

    def _meta(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, **self.prompt.info.to_dict()}

    def plan(self, question: str) -> Plan:
        """A program for ``question`` (from the cache when possible)."""
        question = clean_question(question)
        if not question:
            raise PlanningError("cannot plan: the question is empty")
        if self.cache is not None:
            key = self._key(question)
            record = self.cache.get(key)
            if record is not None:
                return self._cached(record, self.cache.path(key))
        return self._ask(question, self.prompt.messages(question), repair=0)

    def can_repair(self, plan: Plan) -> bool:
        """True for plans this planner wrote (or served from its cache)."""
        return plan.planner == self.name

    def repair(self, question: str, failures: Sequence[tuple[Plan, dict[str, str]]]) -> Plan:
        """A new program after ``failures`` (plans with their ``{type, message}`` errors,
        oldest first): the conversation so far plus each error, one request."""
        question = clean_question(question)
        messages = self.prompt.messages(question)
        for plan, error in failures:
            reply = plan.meta.get("response") or f"```python\n{plan.program.rstrip()}\n```"
            messages.append({"role": "assistant", "content": reply})
            messages.append({"role": "user", "content": self.prompt.repair(
                question, plan.program, str(error.get("type", "error")),
                str(error.get("message", "")))})
        return self._ask(question, messages, repair=len(failures))

    def accept(self, question: str, plan: Plan) -> None:
        """Cache ``plan`` for ``question`` (it ran without error)."""
        if self.cache is None or plan.planner != self.name or plan.cached or plan.error:
            return
        self.cache.put(self._key(clean_question(question)), {
            "question": clean_question(question),
            "program": plan.program,
            "kind": plan.kind,
            "model": self.model,
            "base_url": self.base_url,
            "prompt_hash": self.prompt.hash,
            "repairs": plan.meta.get("repair", 0),
        })

    def _cached(self, record: dict[str, Any], path: Path) -> Plan:
        program = record["program"]
        kind = record.get("kind") if isinstance(record.get("kind"), str) else infer_kind(program)
        return Plan(
            program=program, kind=kind or "other", planner=self.name, cached=True,
            notes=[self.header, f"program from the cache ({path.name}); no request made"],
            meta={**self._meta(), "cache_file": str(path)},
        )

    def _ask(self, question: str, messages: list[dict[str, str]], repair: int) -> Plan:
        completion = self.client.complete(messages)
        self.requests += 1
        what = f"repair {repair}: program rewritten" if repair else "program written"
        notes = [self.header, f"{what} in {completion.ms:.0f} ms", *completion.notes]
        error = None
        try:
            extracted = extract_program(completion.text)
            program, kind = extracted.program, infer_kind(extracted.program)
            if extracted.form != "fenced":
                notes.append(f"program taken from a {extracted.form} reply")
            for dropped in extracted.dropped:
                notes.append(f"dropped a statement outside the function: {dropped[:120]}")
        except ValidationError as exc:
            program, kind, error = completion.text.strip(), "other", exc.to_dict()
        meta = {
            **self._meta(),
            "repair": repair,
            "messages": len(messages),
            "response": completion.text,
            "finish_reason": completion.finish_reason,
            "usage": completion.usage,
            "request_ms": completion.ms,
        }
        return Plan(program=program, kind=kind, planner=self.name, notes=notes, error=error,
                    meta=meta)
