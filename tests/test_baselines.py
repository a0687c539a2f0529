"""`stop-tui baseline`: best-of-n, cot and greedy improvers run through the engine against a
scripted LM server; results land in <session>/baselines/<method>.json for the TUI."""

from __future__ import annotations

import json

import pytest
from conftest import PROGRAMS, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.baseline import programs
from stop_tui.engine.settings import preset
from stop_tui.engine.store import SessionStore

EXACT = (PROGRAMS / "lpn_exact.py").read_text()
ZEROS = (PROGRAMS / "lpn_zeros.py").read_text()
ZEROS_VAL, ZEROS_TEST = 0.5025, 0.5090  # all zeros on lpn, measured with the released code


def responder(body, index):
    """Sample 0 of a request: all zeros; sample 1: the exact solver."""
    return f"Idea.\n```python\n{[ZEROS, EXACT][index % 2]}```\n"


def baseline(server, sessions_dir, method, *args):
    return stop_tui("baseline", "--task", "lpn", "--method", method, "--model", "scripted",
                    "--base-url", server.base_url, "--preset", "quick", "--sessions-dir", str(sessions_dir),
                    "--json", "--quiet", *args)


def read_result(proc, sessions_dir):
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    on_disk = json.loads((sessions_dir / result["session"] / "baselines" / f"{result['method']}.json").read_text())
    assert on_disk == result
    for key, kind in (("method", str), ("task", str), ("scores", list), ("mean", float), ("ci95", list)):
        assert isinstance(result[key], kind)
    assert all(isinstance(s, float) for s in result["scores"]) and len(result["ci95"]) == 2
    return result


def test_best_of_n_spends_the_whole_budget_and_keeps_the_best(sessions_dir):
    with ScriptedLMServer(responder) as server:
        result = read_result(baseline(server, sessions_dir, "best-of-n", "--runs", "2"), sessions_dir)
        q = preset("quick")
        assert len(server.requests) == 2 * q.lm_budget  # every call of both runs' budgets
        assert all(r.get("n") == q.max_responses_per_call for r in server.requests)
    assert result["scores"] == [1.0, 1.0] and result["mean"] == 1.0 and result["ci95"] == [1.0, 1.0]
    assert result["val_scores"] == [1.0, 1.0] and result["runs"] == 2 and result["task"] == "lpn"


def test_cot_is_one_chain_of_thought_attempt(sessions_dir):
    with ScriptedLMServer(responder) as server:
        result = read_result(baseline(server, sessions_dir, "cot", "--runs", "2"), sessions_dir)
        assert len(server.requests) == 2 and all(r.get("n", 1) == 1 for r in server.requests)
        assert all("step by step" in r["messages"][-1]["content"] for r in server.requests)
    # The single sample is the all-zeros program: the released code's numbers.
    assert result["scores"] == [pytest.approx(ZEROS_TEST, abs=1e-12)] * 2
    assert result["val_mean"] == pytest.approx(ZEROS_VAL, abs=1e-12)
    assert result["paper"] == {"mean": 0.577, "plus_minus": 0.03}


def test_greedy_improves_the_best_so_far(sessions_dir):
    with ScriptedLMServer(responder) as server:
        result = read_result(baseline(server, sessions_dir, "greedy", "--runs", "1"), sessions_dir)
        assert len(server.requests) == 2
        # After the first call the exact solver is the best so far: the second call improves it.
        assert "itertools" not in server.requests[0]["messages"][-1]["content"]
        assert "itertools" in server.requests[1]["messages"][-1]["content"]
    assert result["scores"] == [1.0]


def test_with_a_session_results_go_into_its_folder_and_its_log_is_untouched(sessions_dir):
    with ScriptedLMServer(responder) as server:
        parent = SessionStore.create(sessions_dir, {"task": "lpn", "model": "scripted", "base_url": server.base_url,
                                                    "settings": preset("quick").to_dict()}, name="stop-run")
        parent.append(ev.Event(ev.SESSION_STARTED, "", {"task": "lpn"}))
        parent.close()
        proc = stop_tui("baseline", "--method", "cot", "--session", "stop-run", "--sessions-dir", str(sessions_dir),
                        "--json", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert len(server.requests) == preset("quick").meta_runs
    result = json.loads(proc.stdout)
    folder = sessions_dir / "stop-run"
    assert json.loads((folder / "baselines" / "cot.json").read_text()) == result
    assert result["task"] == "lpn" and result["model"] == "scripted" and result["session"] == "stop-run"
    parent = SessionStore(folder)
    assert [e.kind for e in parent.events()] == [ev.SESSION_STARTED]  # the STOP log is not mixed with baselines
    parent.close()
    store = SessionStore(folder / "baselines" / "cot")
    assert store.meta()["kind"] == "baseline"
    assert any(e.kind == ev.LM_REQUEST for e in store.events())
    store.close()


def test_every_baseline_program_defines_the_improver_interface():
    for method, source in programs().items():
        namespace: dict = {}
        exec(compile(source.replace("from helpers import extract_code", "extract_code = None"), method, "exec"),
             namespace)
        assert callable(namespace["improve_algorithm"]), method


class _Utility:
    str, budget, uses = "def utility(solution): ...", 4, 0

    def __call__(self, code):
        return 0.0


class _LM:
    """Records what an improver asks; answers every request with one program."""

    budget, max_responses_per_call = 1, 2

    def __init__(self):
        self.asked = []

    def batch_prompt(self, expertise, messages, temperature):
        self.asked += [(expertise, m) for m in messages]
        return ["```python\nx = 1\n```"] * len(messages)

    def prompt(self, expertise, message, n_responses, temperature):
        return self.batch_prompt(expertise, [message] * n_responses, temperature)


def _asked(source):
    """(expertise, message) pairs the improver program sends to the LM for the solution "S"."""
    def extract_code(replies):
        return [r.split("```python\n")[1].split("```")[0] for r in replies]

    namespace: dict = {}
    exec(compile(source.replace("from helpers import extract_code", ""), "improver", "exec"), namespace)
    namespace["extract_code"] = extract_code
    lm = _LM()
    namespace["improve_algorithm"]("S", _Utility(), lm)
    return lm.asked


def test_the_baselines_ask_in_the_seed_improvers_words():
    """best-of-n and greedy send exactly the seed improver's request; cot adds its step by
    step instructions after it."""
    from stop_tui.engine.tasks import META, load_task

    seed = set(_asked(load_task(META).seed))
    assert len(seed) == 1
    (expertise, message), = seed
    assert message.startswith("Improve the following solution:\n```python\nS\n```")
    assert set(_asked(programs()["best-of-n"])) == seed
    assert set(_asked(programs()["greedy"])) == seed
    (cot_expertise, cot_message), = _asked(programs()["cot"])
    assert cot_expertise == expertise and cot_message.startswith(message + "\n\nThink step by step")


def test_unknown_method_is_refused(sessions_dir):
    proc = stop_tui("baseline", "--method", "magic", "--sessions-dir", str(sessions_dir))
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
