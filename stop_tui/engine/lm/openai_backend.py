"""Any OpenAI-compatible chat server through the `openai` package (imported lazily: ~0.9 s).

The client's own retries are off: the engine retries (lm/retry.py) so that every attempt is
counted and logged. A request either returns Completions or raises LMRequestError saying
whether it is worth retrying (429, 5xx, timeouts, dropped connections) and what Retry-After
the server asked for. A reply that cannot be read (malformed JSON, a body cut short, no
choices) is not retried: the server may have billed it; it becomes failed completions.
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

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "sk-no-key-needed"
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


class OpenAIBackend:
    """One chat-completions request per `request`. `honours_n` is learned from the first reply
    to a multi-sample request: servers that ignore `n` (llama.cpp's) send one choice back."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 max_concurrency: int = 8, timeout: float | None = None, http_client: Any = None,
                 max_retries: int = 0) -> None:
        try:
            import openai
        except ImportError:
            raise UserError("the openai backend needs the `openai` package: pip install openai") from None
        self.model = model
        self.price_key = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url.rstrip("/") == DEFAULT_BASE_URL:
                raise UserError("OPENAI_API_KEY is not set: export it, or point --base-url / "
                                "OPENAI_BASE_URL at a server that needs no key")
            key = PLACEHOLDER_KEY
        if timeout is None:
            timeout = float(os.environ.get("STOP_TUI_LM_TIMEOUT", "600"))
        kwargs: dict[str, Any] = {"base_url": self.base_url, "api_key": key, "timeout": timeout,
                                  "max_retries": max_retries}
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._openai = openai
        self._client = openai.OpenAI(**kwargs)
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_concurrency), thread_name_prefix="lm")
        self.honours_n: bool | None = None
        # Newer OpenAI models refuse `max_tokens` and want `max_completion_tokens` (llama.cpp's
        # server knows only the former): start with max_tokens, switch when a server says so.
        self.tokens_param = "max_tokens"
        self._lock = threading.Lock()

    def check(self) -> None:
        """Fail early, with the URL, when the server is unreachable or does not know the model."""
        openai = self._openai
        try:
            models = [m.id for m in self._client.models.list()]
        except openai.APIConnectionError:
            raise UserError(f"cannot reach the LM server at {self.base_url}: start it, or set "
                            "--base-url / OPENAI_BASE_URL to the right URL") from None
        except openai.AuthenticationError:
            raise UserError(f"the LM server at {self.base_url} rejected the API key "
                            "(set OPENAI_API_KEY)") from None
        except openai.APIStatusError:
            return  # a server without /models: the first request will tell
        except Exception:  # noqa: BLE001 - a garbled /models reply: let the requests tell
            return
        if models and self.model not in models:
            shown = ", ".join(models[:8]) + (" ..." if len(models) > 8 else "")
            raise UserError(f"unknown model {self.model!r} at {self.base_url} (available: {shown})")

    def request(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                seed: int | None = None) -> Completions:
        openai = self._openai
        kwargs: dict[str, Any] = {
            "model": self.model, "temperature": temperature, self.tokens_param: max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        if n > 1:
            kwargs["n"] = n
        if seed is not None:
            kwargs["seed"] = seed
        try:
            response = self._client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            status = exc.status_code
            text = str(exc)
            if (status == 400 and self.tokens_param == "max_tokens" and "max_tokens" in text
                    and "max_completion_tokens" in text):
                self.tokens_param = "max_completion_tokens"  # and try again (counted as a retry)
                raise LMRequestError(_describe(exc), retryable=True, status=status,
                                     retry_after=0.0) from None
            raise LMRequestError(_describe(exc), retryable=status in RETRYABLE_STATUS,
                                 status=status, retry_after=_retry_after(exc.response)) from None
        except openai.APIConnectionError as exc:  # timeouts included
            raise LMRequestError(_describe(exc), retryable=True) from None
        except openai.APIResponseValidationError as exc:
            return _malformed(n, f"malformed reply: {exc}")
        except ValueError as exc:  # a body that is not JSON (cut short, garbled)
            return _malformed(n, f"malformed reply: {type(exc).__name__}: {exc}")
        return self._read(response, n)

    def _read(self, response: Any, n: int) -> Completions:
        try:
            usage = getattr(response, "usage", None)
            pt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
            ct = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
        except (TypeError, ValueError):
            usage, pt, ct = None, 0, 0
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            return Completions([None] * n, pt, ct, 1, [None] * n,
                               "malformed reply: no choices", usage is None)
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
        return Completions(texts, pt, ct, 1, reasons, error, usage is None)

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
                               got.finish_reasons[:k], got.error, got.usage_missing)

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
                           any(p.usage_missing for p in parts))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _malformed(n: int, message: str) -> Completions:
    return Completions([None] * n, 0, 0, 1, [None] * n, message[:300], True)


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
