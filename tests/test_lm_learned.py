"""What a run learns about its server is kept in the session, so a resumed run does not ask
again: a server that refuses `max_tokens` (newer OpenAI models want `max_completion_tokens`)
is sent one refused request in the session's life, not one per run. Moving the session to
another server (`run --resume --base-url`) forgets it: that server is asked as new."""

from __future__ import annotations

import pytest
from lm_helpers import only_session, responder, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.store import SessionStore

pytestmark = pytest.mark.timeout(300)


def refused(bodies: list[dict]) -> int:
    """Requests the reject_max_tokens server refused (the ones that carried max_tokens)."""
    return sum(1 for b in bodies if "max_tokens" in b)


def meta_of(sessions_dir, session: str) -> dict:
    store = SessionStore.open(sessions_dir, session, readonly=True)
    try:
        return store.meta()
    finally:
        store.close()


@pytest.mark.slow
def test_the_max_completion_tokens_switch_survives_a_resume_and_a_new_server_forgets_it(sessions_dir):
    with ScriptedLMServer(responder, reject_max_tokens=True) as server:
        first = stop_tui("run", "--task", "lpn", "--model", "scripted", "--base-url", server.base_url,
                         "--preset", "quick", "--iterations", "0", "--sessions-dir", str(sessions_dir))
        assert first.returncode == 0, first.stderr
        session = only_session(sessions_dir)
        assert refused(server.requests) == 1  # learned from the first refusal
        assert meta_of(sessions_dir, session)["lm_max_completion_tokens"] is True
        before = len(server.requests)

        resumed = stop_tui("run", "--resume", session, "--iterations", "1",
                           "--sessions-dir", str(sessions_dir), "--json")
        assert resumed.returncode == 0, resumed.stderr
        sent = server.requests[before:]
    assert sent, "the resumed run asked nothing"
    assert refused(sent) == 0  # the resumed run knew: no refused request again
    assert all("max_completion_tokens" in b for b in sent)
    store = SessionStore.open(sessions_dir, session, readonly=True)
    retries = list(store.events(kinds=(ev.LM_RETRY,)))
    store.close()
    assert len(retries) == 1  # the one refusal of the first run, retried at once

    with ScriptedLMServer(responder) as other:  # a server that knows only max_tokens (llama.cpp's)
        moved = stop_tui("run", "--resume", session, "--iterations", "2", "--base-url", other.base_url,
                         "--sessions-dir", str(sessions_dir), "--json")
        assert moved.returncode == 0, moved.stderr
        assert other.requests and all("max_tokens" in b and "max_completion_tokens" not in b
                                      for b in other.requests)
    assert meta_of(sessions_dir, session).get("lm_max_completion_tokens") is None
