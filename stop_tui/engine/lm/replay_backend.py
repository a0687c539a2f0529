"""`--model replay:SESSION`: answers every LM request from a recorded session, with no network.

The LM service looks each call up in the backend's `book` (see record.py) before asking the
backend; a request the record does not hold reaches `request` here and fails (a failed
completion whose error names the session), it is never sent anywhere.
"""

from __future__ import annotations

from pathlib import Path

from stop_tui.engine.errors import UserError
from stop_tui.engine.lm.base import Completions, LMRequestError
from stop_tui.engine.lm.record import Book
from stop_tui.engine.store import SessionStore, SessionUnreadable

PREFIX = "replay:"


class ReplayBackend:
    honours_n = True  # a recorded group is answered whole; nothing is split

    def __init__(self, session: str, sessions_dir: Path) -> None:
        try:
            self.source = SessionStore.open(sessions_dir, session, readonly=True)
        except SessionUnreadable:
            raise
        except UserError:
            raise UserError(f"cannot replay {session!r}: no such session in {sessions_dir} "
                            "(see `stop-tui list`)") from None
        meta = self.source.meta()
        self.session = self.source.id
        self.source_meta = meta
        self.model = meta.get("model") or "unknown"  # the model whose replies these are
        self.price_key = self.model
        self.book = Book.from_events(self.source.events(), self.source.text)
        if not len(self.book):
            raise UserError(f"session {self.session} has no recorded LM calls to replay")

    def request(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                seed: int | None = None) -> Completions:
        raise LMRequestError(f"no recorded reply in session {self.session} for this request "
                             "(replay sends nothing over the network)", retryable=False)

    def complete(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                 seed: int | None = None) -> Completions:
        return Completions([None] * n, 0, 0, 0, [None] * n,
                           f"no recorded reply in session {self.session}")

    def close(self) -> None:
        self.source.close()
