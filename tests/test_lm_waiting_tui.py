"""The TUI's Budget pane names an LM request that is still waiting for its server (issue 15,
item 8): a real engine in the app, a real request to a scripted server that never answers."""

from __future__ import annotations

import asyncio
import time

import pytest
from lm_helpers import responder
from scripted_server import ScriptedLMServer

from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.session import new_session, session_settings
from stop_tui.tui.app import StopApp
from stop_tui.tui.widgets.budget import BudgetPane
from stop_tui.tui.widgets.scores import ScoresPane

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_budget_pane_shows_the_request_still_waiting(sessions_dir):
    with ScriptedLMServer(responder, broken="hang") as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        seen: dict[str, str] = {}

        async def go() -> None:
            app = StopApp(session, theme="dark", remember_theme=False)
            async with app.run_test(size=(160, 48)) as pilot:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    budget = str(app.screen.query_one(BudgetPane).render())
                    if "waiting" in budget and server.base_url in budget:
                        seen["budget"] = budget
                        seen["scores"] = str(app.screen.query_one(ScoresPane).render())
                        break
                    await pilot.pause(0.2)
                session.gate.cancel()
                session.engine.lm.close()  # abandons the request nobody will answer
                deadline = time.monotonic() + 30
                while not app.engine_done.is_set() and time.monotonic() < deadline:
                    await pilot.pause(0.1)
                await pilot.pause(0.5)
                seen["stopped"] = str(app.engine_done.is_set())

        asyncio.run(go())
        session.close()
    assert "budget" in seen, "the Budget pane never showed the waiting request"
    assert "No scores yet: the seed improver is being scored." in seen["scores"]  # not "press run"
    assert seen["stopped"] == "True"  # the engine stopped although the request never returned
    line = [ln for ln in seen["budget"].splitlines() if ln.startswith("waiting")][0]
    assert server.base_url in line and "it0/check/r1/lm1" in line
    seconds = int(line.split(server.base_url, 1)[1].split(" s", 1)[0])
    assert seconds >= 5
