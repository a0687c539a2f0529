"""Any OpenAI-compatible chat server through the `openai` package (imported lazily: ~0.9 s).

The client's own retries are off: the engine retries (lm/retry.py) so that every attempt is
counted and logged. A request either returns Completions or raises LMRequestError saying
whether it is worth retrying (429, 5xx, timeouts, dropped connections) and what Retry-After
the server asked for. A reply that cannot be read (malformed JSON, a body cut short, no
choices) is not retried: the server may have billed it; it becomes failed completions.

Constructing the backend contacts nothing (a session can be opened and viewed with its server
gone): the client is made at the first request, or before it by `warm` (in the background,
while the engine starts its sandbox: the import is most of a second the first request would
otherwise wait), and what the server says at the first request is the check.
The model name is whatever the server serves (Ollama lists `name:latest` and serves `name`;
llama.cpp's server serves any name): only a 404 on a request means the model does not exist,
and then /models is asked what it offers. Servers' quirks are learned once and kept (`learned`,
`recall`: a session saves them, so a resumed run does not ask again): whether `n` is honoured,
`max_completion_tokens` instead of `max_tokens`, and reasoning models (o-series, gpt-5) that
refuse any temperature but their default (`fixed_temperature`).
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stop_tui.engine.errors import UserError
from stop_tui.engine.lm.base import Completions, LMRequestError
from stop_tui.engine.lm.retry import RetryPolicy, with_retries
from stop_tui.engine.settings import lm_timeout

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "sk-no-key-needed"
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


class OpenAIBackend:
    """One chat-completions request per `request`. `honours_n` is learned from the first reply
    to a multi-sample request: servers that ignore `n` (llama.cpp's) send one choice back."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 max_concurrency: int = 8, timeout: float | None = None, http_client: Any = None,
                 max_retries: int = 0) -> None:
        self.model = model
        self.price_key = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self._key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout = lm_timeout(timeout)
        self._http_client = http_client
        self._max_retries = max_retries
        self._openai: Any = None
        self._client: Any = None  # made at the first request (or by `warm`)
        self._warming: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_concurrency), thread_name_prefix="lm")
        self.honours_n: bool | None = None
        # Newer OpenAI models refuse `max_tokens` and want `max_completion_tokens` (llama.cpp's
        # server knows only the former): start with max_tokens, switch when a server says so.
        self.tokens_param = "max_tokens"
        # Reasoning models refuse a temperature other than their default: then none is sent.
        self.fixed_temperature = False
        self.answered = 0  # requests the server answered (any status but a refused connection)
        self._lock = threading.Lock()

    def learned(self) -> dict[str, bool]:
        """What this backend has learned about its server, as session meta entries
        (base.LEARNED_KEYS; what is not known yet is left out)."""
        facts: dict[str, bool] = {}
        if self.honours_n is not None:
            facts["lm_honours_n"] = self.honours_n
        if self.fixed_temperature:
            facts["lm_fixed_temperature"] = True
        if self.tokens_param == "max_completion_tokens":
            facts["lm_max_completion_tokens"] = True
        return facts

    def recall(self, meta: dict) -> None:
        """Take back what an earlier run learned about this server (from the session's meta)."""
        if meta.get("lm_honours_n") is not None:
            self.honours_n = bool(meta["lm_honours_n"])
        if meta.get("lm_fixed_temperature"):
            self.fixed_temperature = True
        if meta.get("lm_max_completion_tokens"):
            self.tokens_param = "max_completion_tokens"

    @property
    def key_missing(self) -> bool:
        return not self._key and self.base_url.rstrip("/") == DEFAULT_BASE_URL

    def check(self) -> None:
        """What can be checked without contacting anything: a key for OpenAI itself. (The
        server is checked by the first request: see the module's text.)"""
        if self.key_missing:
            raise UserError("OPENAI_API_KEY is not set: export it, or point --base-url / "
                            "OPENAI_BASE_URL at a server that needs no key")

    def warm(self) -> None:
        """Make the client in a background thread (import `openai`, build the client and its
        chat resource); contacts nothing. What goes wrong is left for the first request to
        report (a request waits for a warm-up in progress: `_connect` holds the lock)."""
        with self._lock:
            if self._client is not None or self._warming is not None or self.key_missing:
                return
            self._warming = threading.Thread(target=self._warm, daemon=True, name="lm-warm")
        self._warming.start()

    def _warm(self) -> None:
        try:
            self._connect().chat.completions  # noqa: B018 - the resource is built on first access
        except Exception:  # noqa: BLE001 - the first request reports it
            pass

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                if self.key_missing:
                    raise LMRequestError("OPENAI_API_KEY is not set (export it, or use --base-url "
                                         "for a server that needs no key)", retryable=False)
                try:
                    import openai
                except ImportError:
                    raise LMRequestError("the openai backend needs the `openai` package: pip "
                                         "install openai", retryable=False) from None
                kwargs: dict[str, Any] = {"base_url": self.base_url,
                                          "api_key": self._key or PLACEHOLDER_KEY,
                                          "timeout": self.timeout, "max_retries": self._max_retries}
                if self._http_client is not None:
                    kwargs["http_client"] = self._http_client
                self._openai = openai
                self._client = openai.OpenAI(**kwargs)
            return self._client

    def listing(self) -> list[tuple[str, str | None]] | None:
        """(id, owned_by) of each model the server's /models lists (None when it cannot say)."""
        try:
            return [(str(m.id), getattr(m, "owned_by", None)) for m in self._connect().models.list()]
        except Exception:  # noqa: BLE001 - no /models, or a garbled one
            return None

    def offered_models(self) -> list[str] | None:
        """What the server's /models lists (None when it cannot say)."""
        listed = self.listing()
        return None if listed is None else [name for name, _ in listed]

    def request(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                seed: int | None = None) -> Completions:
        client = self._connect()
        openai = self._openai
        kwargs: dict[str, Any] = {
            "model": self.model, self.tokens_param: max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        if not self.fixed_temperature:
            kwargs["temperature"] = temperature
        if n > 1:
            kwargs["n"] = n
        if seed is not None:
            kwargs["seed"] = seed
        try:
            response = client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            self.answered += 1
            raise self._status_error(exc) from None
        except openai.APIConnectionError as exc:  # timeouts included
            # A server that never answered (a refused connection: a wrong URL or a server that
            # is not running; or no answer within the timeout) will not answer a retry either.
            # Once it has answered, both are retried (a restart, a slow moment).
            message = _describe(exc)
            if isinstance(exc, openai.APITimeoutError):
                message = f"no answer within {self.timeout:g} s (--lm-timeout); {message}"
            raise LMRequestError(message, retryable=bool(self.answered)) from None
        except openai.APIResponseValidationError as exc:
            self.answered += 1
            return _malformed(n, f"malformed reply: {exc}")
        except (ValueError, TypeError, AttributeError) as exc:  # not JSON, or not the shape
            self.answered += 1
            return _malformed(n, f"malformed reply: {type(exc).__name__}: {exc}")
        self.answered += 1
        return self._read(response, n)

    def _status_error(self, exc: Any) -> LMRequestError:
        status = exc.status_code
        text = str(exc)
        if (status == 400 and self.tokens_param == "max_tokens" and "max_tokens" in text
                and "max_completion_tokens" in text):
            self.tokens_param = "max_completion_tokens"  # and try again (counted as a retry)
            return LMRequestError(_describe(exc), retryable=True, status=status, retry_after=0.0)
        if status == 400 and not self.fixed_temperature and _refuses_temperature(text):
            self.fixed_temperature = True  # a reasoning model: send its default from now on
            return LMRequestError(_describe(exc), retryable=True, status=status, retry_after=0.0)
        if status == 404:
            offered = self.offered_models()
            if offered is not None and self.model not in offered:
                shown = ", ".join(offered[:8]) + (" ..." if len(offered) > 8 else "")
                return LMRequestError(f"the server has no model {self.model!r} (it offers: "
                                      f"{shown or 'nothing'})", retryable=False, status=status)
            return LMRequestError(f"{_describe(exc)} (check --base-url: it usually ends in /v1)",
                                  retryable=False, status=status)
        if status in (401, 403):
            return LMRequestError(f"the server refused the API key (set OPENAI_API_KEY); "
                                  f"{_describe(exc)}", retryable=False, status=status)
        return LMRequestError(_describe(exc), retryable=status in RETRYABLE_STATUS,
                              status=status, retry_after=_retry_after(exc.response))

    def _read(self, response: Any, n: int) -> Completions:
        try:
            usage = getattr(response, "usage", None)
            pt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
            ct = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
            details = getattr(usage, "completion_tokens_details", None)
            rt = int(getattr(details, "reasoning_tokens", 0) or 0) if details is not None else 0
        except (TypeError, ValueError):
            usage, pt, ct, rt = None, 0, 0, 0
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            return Completions([None] * n, pt, ct, 1, [None] * n,
                               "malformed reply: no choices", usage is None, rt)
        texts: list[str | None] = []
        reasons: list[str | None] = []
        bad = 0
        for choice in choices[:n]:
            message = getattr(choice, "message", None)
            content = getattr(message, "content", None)
            if not isinstance(content, str):
                content = None
                bad += 1
            texts.append(content)
            reason = getattr(choice, "finish_reason", None)
            reasons.append(reason if isinstance(reason, str) else None)
        if n > 1 and self.honours_n is None:
            with self._lock:
                if self.honours_n is None:
                    self.honours_n = len(choices) >= n
        error = f"malformed reply: {bad} choice(s) without text" if bad else None
        return Completions(texts, pt, ct, 1, reasons, error, usage is None, rt)

    def complete(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                 seed: int | None = None, policy: RetryPolicy = RetryPolicy()) -> Completions:
        """n completions (with retries): one request with n, the rest as concurrent singles when
        the server ignores n. The engine's LM service does the same with full records."""

        def one(k: int, offset: int) -> Completions:
            s = None if seed is None else seed + offset
            try:
                got, made = with_retries(lambda: self.request(system, user, n=k, temperature=temperature,
                                                              max_tokens=max_tokens, seed=s), policy)
            except LMRequestError as exc:
                made = getattr(exc, "attempts", 1)
                return Completions([None] * k, 0, 0, made, [None] * k, str(exc))
            return Completions(got.texts[:k], got.prompt_tokens, got.completion_tokens, made,
                               got.finish_reasons[:k], got.error, got.usage_missing,
                               got.reasoning_tokens)

        parts: list[Completions] = []
        if self.honours_n is not False or n == 1:
            parts.append(one(n, 0))
        done = sum(len(p.texts) for p in parts)
        futures = [self._pool.submit(one, 1, offset) for offset in range(done, n)]
        parts += [f.result() for f in futures]
        texts = [t for p in parts for t in p.texts]
        return Completions(texts, sum(p.prompt_tokens for p in parts),
                           sum(p.completion_tokens for p in parts), sum(p.requests for p in parts),
                           [r for p in parts for r in p.finish_reasons],
                           "; ".join(p.error for p in parts if p.error) or None,
                           any(p.usage_missing for p in parts), sum(p.reasoning_tokens for p in parts))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()


def _malformed(n: int, message: str) -> Completions:
    return Completions([None] * n, 0, 0, 1, [None] * n, message[:300], True)


def _refuses_temperature(text: str) -> bool:
    """A 400 saying the model accepts only its default temperature (OpenAI's reasoning models:
    "Unsupported value: 'temperature' does not support 0.7 with this model. Only the default
    (1) value is supported.")."""
    lower = text.lower()
    return "temperature" in lower and ("unsupported" in lower or "only the default" in lower
                                       or "not support" in lower)


def _retry_after(response: Any) -> float | None:
    """Retry-After (seconds or an HTTP date) or retry-after-ms, in seconds."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {exc}"[:300]
