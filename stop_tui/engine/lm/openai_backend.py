"""Any OpenAI-compatible chat server through the `openai` package (imported lazily: ~0.9 s)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stop_tui.engine.errors import UserError
from stop_tui.engine.lm.base import Completions

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "sk-no-key-needed"


class OpenAIBackend:
    """Asks for n samples in one request; when the server sends back fewer (llama.cpp's server
    ignores `n`), it notes that and gets the rest as concurrent single requests."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 max_concurrency: int = 8, timeout: float = 600.0, http_client: Any = None,
                 max_retries: int = 2) -> None:
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
        kwargs: dict[str, Any] = {"base_url": self.base_url, "api_key": key, "timeout": timeout,
                                  "max_retries": max_retries}
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._openai = openai
        self._client = openai.OpenAI(**kwargs)
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_concurrency), thread_name_prefix="lm")
        self.honours_n: bool | None = None  # learned from the first multi-sample reply
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
        if models and self.model not in models:
            shown = ", ".join(models[:8]) + (" ..." if len(models) > 8 else "")
            raise UserError(f"unknown model {self.model!r} at {self.base_url} (available: {shown})")

    def _request(self, system: str, user: str, n: int, temperature: float, max_tokens: int,
                 seed: int | None) -> tuple[list[str | None], list[str | None], int, int]:
        kwargs: dict[str, Any] = {
            "model": self.model, "temperature": temperature, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        if n > 1:
            kwargs["n"] = n
        if seed is not None:
            kwargs["seed"] = seed
        response = self._client.chat.completions.create(**kwargs)
        texts = [c.message.content if c.message else None for c in response.choices]
        reasons = [c.finish_reason for c in response.choices]
        usage = response.usage
        return (texts, reasons, (usage.prompt_tokens or 0) if usage else 0,
                (usage.completion_tokens or 0) if usage else 0)

    def complete(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                 seed: int | None = None) -> Completions:
        texts: list[str | None] = []
        reasons: list[str | None] = []
        prompt_tokens = completion_tokens = requests = 0
        errors: list[str] = []
        if self.honours_n is not False or n == 1:
            try:
                got, why, pt, ct = self._request(system, user, n, temperature, max_tokens, seed)
                requests += 1
                texts += got[:n]
                reasons += why[:n]
                prompt_tokens += pt
                completion_tokens += ct
                if n > 1:
                    with self._lock:
                        self.honours_n = len(got) >= n
            except self._openai.OpenAIError as exc:
                requests += 1
                errors.append(_describe(exc))
        missing = n - len(texts)
        if missing > 0 and not errors:
            futures = [self._pool.submit(self._request, system, user, 1, temperature, max_tokens,
                                         None if seed is None else seed + len(texts) + i)
                       for i in range(missing)]
            for future in futures:
                requests += 1
                try:
                    got, why, pt, ct = future.result()
                    texts += got[:1] or [None]
                    reasons += why[:1] or [None]
                    prompt_tokens += pt
                    completion_tokens += ct
                except self._openai.OpenAIError as exc:
                    errors.append(_describe(exc))
        texts += [None] * (n - len(texts))
        return Completions(texts, prompt_tokens, completion_tokens, requests, reasons,
                           "; ".join(errors) or None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {exc}"[:300]
