"""The LM record of a session, as a book of answers keyed for replay and resume.

A call is keyed by (handle path, request content hash, occurrence): the handle path is the
node that owns the `language_model` (``it1/c2/r1``), the content hash covers the system
prompt, every message, the temperature and max_tokens, and the occurrence counts identical
requests from the same handle. The node path of the call itself (``.../lm3``) is not part of
the key: an improver calling the LM from several threads may number its calls differently on
each run, while the content and occurrence still match.

Each server request that was answered is recorded as an LM_PART event (group = which distinct
message of the batch, offset = which sample), so a call cut short by a crash is resumed
part by part: parts already answered are never requested again.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from stop_tui.engine import events as ev


def content_key(system: str, prompts: list[str], temperature: float, max_tokens: int) -> str:
    """The request's content hash, from the hashes of its texts (as LM_REQUEST records them)."""
    raw = json.dumps([system, list(prompts), round(float(temperature), 6), int(max_tokens)])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def request_key(data: dict) -> str:
    return content_key(data["system"], data["prompts"], data["temperature"], data["max_tokens"])


def handle_path(call_path: str) -> str:
    return ev.parent_path(call_path)


@dataclass
class RecordedCall:
    path: str  # where it was recorded
    request: dict
    parts: dict[tuple[int, int], dict] = field(default_factory=dict)  # (group, offset) -> LM_PART data
    reply: dict | None = None  # LM_REPLY data, when the call finished

    @property
    def complete(self) -> bool:
        return self.reply is not None


Key = tuple[str, str, int]


class Book:
    """Recorded answers, read from an event log. `text(hash)` reads the texts they name."""

    def __init__(self, text: Callable[[str | None], str | None]) -> None:
        self.calls: dict[Key, RecordedCall] = {}
        self.text = text

    def __len__(self) -> int:
        return len(self.calls)

    def get(self, key: Key) -> RecordedCall | None:
        return self.calls.get(key)

    @classmethod
    def from_events(cls, events: Iterable[ev.Event], text: Callable[[str | None], str | None]) -> Book:
        """Every LM exchange in the log, superseded segments included (their answers were paid
        for). Occurrences are counted per segment (a RESUMED event starts one); when a call is
        found in several segments, finished replies and all answered parts are merged."""
        book = cls(text)
        occurrences: Counter = Counter()
        at_path: dict[str, RecordedCall] = {}
        for event in events:
            if event.kind == ev.RESUMED:
                occurrences.clear()
                at_path.clear()
            elif event.kind == ev.LM_REQUEST:
                d = event.data
                try:
                    k = request_key(d)
                except (KeyError, TypeError, ValueError):
                    continue
                handle = handle_path(event.path)
                occ = occurrences[(handle, k)]
                occurrences[(handle, k)] += 1
                key = (handle, k, occ)
                call = book.calls.get(key)
                if call is None:
                    call = book.calls[key] = RecordedCall(event.path, d)
                at_path[event.path] = call
            elif event.kind == ev.LM_PART:
                call = at_path.get(event.path)
                if call is not None:
                    call.parts.setdefault((int(event.data["group"]), int(event.data["offset"])), event.data)
            elif event.kind == ev.LM_REPLY:
                call = at_path.get(event.path)
                if call is not None and call.reply is None:
                    call.reply = event.data
        return book


def aggregate_parts(parts: list[dict]) -> dict:
    """Totals over a call's parts (recorded or fresh)."""
    return {
        "prompt_tokens": sum(int(p.get("prompt_tokens", 0)) for p in parts),
        "completion_tokens": sum(int(p.get("completion_tokens", 0)) for p in parts),
        "reasoning_tokens": sum(int(p.get("reasoning_tokens", 0)) for p in parts),
        "requests": sum(int(p.get("requests", 1)) for p in parts),
        "retries": sum(max(int(p.get("requests", 1)) - 1, 0) for p in parts),
    }
