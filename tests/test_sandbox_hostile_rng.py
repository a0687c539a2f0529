"""Labels rebuilt from the RNG state (issue 14, item 1).

The released code runs a candidate in the instance generators' states. Nothing is drawn from
Python's `random` after seeding, so `random.getstate()` equals `random.Random(seed).getstate()`:
a solution searches the seeds, finds its instance's, regenerates the instance with
`RandomState(seed)` and scores 1.0 without reading its training data. By default the
candidate's generators are keyed by a secret of the session instead; `--set rng=reference`
gives the released code's behaviour. Programs that draw no random numbers score the same.
"""

from __future__ import annotations

import json

import pytest
from conftest import PROGRAMS, ROOT, stop_tui
from lm_helpers import run_args
from scripted_server import ScriptedLMServer
from test_sandbox_hostile_improver import IdleBackend

from stop_tui.engine import candidate_rng
from stop_tui.engine import events as ev
from stop_tui.engine.candidate_rng import CandidateRng
from stop_tui.engine.safety import check_source
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.session import new_session, open_session, session_settings
from stop_tui.engine.store import SessionStore
from stop_tui.engine.tasks import load_task

pytestmark = pytest.mark.timeout(300)

LPN = load_task("lpn")
REFERENCE = {"rng": "reference"}
ZEROS = (PROGRAMS / "lpn_zeros.py").read_text()
ZEROS_SCORES = {"val": 0.5025, "test": 0.5090}  # all zeros on lpn, measured with the released code

SEED_SEARCH = r'''
import random
import time

import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    state, started = random.getstate(), time.perf_counter()
    for seed in range(20000):
        if time.perf_counter() - started > 1.5:  # (within the 2 s limit, on a loaded machine)
            break
        if random.Random(seed).getstate() == state:
            instance = np.random.RandomState(seed)
            true_bits = instance.binomial(1, 0.3, train_samples.shape[1])
            return (test_samples @ true_bits) % 2
    return np.zeros(len(test_samples), dtype=int)
'''


@pytest.mark.slow
@pytest.mark.parametrize("split", ["val", "test"])
def test_the_seed_search_attack_is_at_chance_by_default(split):
    # The hole, as in the released code: the reference generators give the instance away.
    assert score_solution(LPN, SEED_SEARCH, split, settings=REFERENCE).score == 1.0
    result = score_solution(LPN, SEED_SEARCH, split)
    assert result.error is None, result.error
    assert result.score == pytest.approx(ZEROS_SCORES[split], abs=1e-12)  # found no seed: zeros


@pytest.mark.slow
def test_an_improver_returning_the_attack_gets_chance_not_one(tmp_path):
    improver = f"def improve_algorithm(initial_solution, utility, language_model):\n    return {SEED_SEARCH!r}\n"
    for task_settings, want in ((None, ZEROS_SCORES["val"]), (REFERENCE, 1.0)):
        session = new_session(tmp_path, "lpn", session_settings("quick"), IdleBackend(),
                              task_settings=task_settings)
        try:
            result = session.engine.meta_score(improver, "attack", with_test=False)
        finally:
            session.close()
        assert result.val == pytest.approx(want, abs=1e-12), task_settings


DETERMINISTIC = [("grid", (ROOT / "tasks" / "grid" / "seed.py").read_text(),
                  {"val": 0.482934729806, "test": 0.438874651123}),
                 ("lpn", ZEROS, ZEROS_SCORES),
                 ("lpn", (PROGRAMS / "lpn_exact.py").read_text(), {"val": 1.0, "test": 1.0})]


@pytest.mark.parametrize(("task", "source", "scores"), DETERMINISTIC, ids=["grid-seed", "lpn-zeros", "lpn-exact"])
def test_deterministic_programs_score_exactly_as_before_in_both_modes(task, source, scores):
    for split, want in scores.items():
        for settings in (None, REFERENCE):
            got = score_solution(load_task(task), source, split, settings=settings).score
            assert got == pytest.approx(want, abs=1e-12), (split, settings)


def test_a_random_program_scores_the_same_under_one_secret_and_differently_under_another():
    one = CandidateRng("secret", "11" * 32)
    scores = [score_solution(LPN, LPN.seed, "val", rng=one).score for _ in range(2)]
    other = score_solution(LPN, LPN.seed, "val", rng=CandidateRng("secret", "22" * 32)).score
    reference = score_solution(LPN, LPN.seed, "val", settings=REFERENCE).score
    assert scores[0] == scores[1]
    assert len({scores[0], other, reference}) == 3
    assert reference == pytest.approx(0.5275, abs=1e-12)  # the README's number (random guessing)


def test_the_secret_is_kept_by_the_session_for_resume_and_replay(tmp_path):
    settings = session_settings("quick", seed=7)
    a = new_session(tmp_path / "a", "lpn", settings, IdleBackend())
    b = new_session(tmp_path / "b", "lpn", settings, IdleBackend())
    c = new_session(tmp_path / "c", "lpn", session_settings("quick", seed=8), IdleBackend())
    try:
        secrets = [s.store.meta()[candidate_rng.META_KEY] for s in (a, b, c)]
        assert secrets[0] == secrets[1] != secrets[2]  # one machine, one seed: one secret
        assert len(bytes.fromhex(secrets[0])) == 32
        assert a.engine.rng == CandidateRng("secret", secrets[0])
        session_id = a.id
    finally:
        for s in (a, b, c):
            s.close()
    reopened = open_session(tmp_path / "a", session_id, backend=IdleBackend())
    try:
        assert reopened.engine.rng == CandidateRng("secret", secrets[0])
    finally:
        reopened.close()
    # A replay keeps the original's secret; a session from before secrets ran the reference.
    assert candidate_rng.session_meta(9, {"rng_secret": secrets[0]}) == {"rng_secret": secrets[0]}
    assert candidate_rng.session_meta(9, {}) == {}
    assert candidate_rng.for_session({}).mode == "reference"
    # The secret reaches neither the improver nor the solution: only derived generator states.
    store = SessionStore.open(tmp_path / "a", session_id)
    try:
        events = list(store.events())
    finally:
        store.close()
    assert not any(secrets[0] in json.dumps(e.data) for e in events)


def test_rng_state_introspection_is_flagged():
    findings = check_source(SEED_SEARCH + "\nx = np.random.get_state()\ny = random._inst\n"
                            "z = np.random.default_rng().bit_generator\n")
    details = sorted(f.detail for f in findings if f.kind == "rng_state")
    assert details == ["reads (...).bit_generator", "reads (...).getstate", "reads np.random.get_state",
                       "reads random._inst",
                       "reads random.getstate"], details


@pytest.mark.slow
def test_cli_score_and_run_with_the_reference_generators(tmp_path):
    attack = tmp_path / "attack.py"
    attack.write_text(SEED_SEARCH)
    default = stop_tui("score", "--task", "lpn", str(attack))
    assert default.returncode == 0 and default.stdout.strip() == "lpn val: 0.502500", default
    reference = stop_tui("score", "--task", "lpn", "--set", "rng=reference", str(attack))
    assert reference.returncode == 0 and reference.stdout.strip() == "lpn val: 1.000000", reference
    bad = stop_tui("score", "--task", "grid", "--set", "rng=fixed", str(attack))
    assert bad.returncode == 2
    assert bad.stderr.strip() == "stop-tui: error: task setting rng must be secret or reference (got 'fixed')"

    sessions = tmp_path / "sessions"
    with ScriptedLMServer(lambda body, i: "no code") as server:
        made = []
        for extra in ((), ("--set", "rng=reference")):
            proc = stop_tui(*run_args(server, sessions, "--iterations", "0", "--json", *extra))
            assert proc.returncode == 0, proc.stderr
            made.append(json.loads(proc.stdout)["session"])
        resumed = stop_tui("run", "--resume", made[0], "--sessions-dir", str(sessions), "--set", "rng=reference")
    assert resumed.returncode == 2 and "--set applies to a new session" in resumed.stderr
    shown = [stop_tui("show", s, "--sessions-dir", str(sessions)).stdout for s in made]
    assert "rng       reference" not in shown[0]
    assert "rng       reference: candidates start in the instance generators' states" in shown[1]
    store = SessionStore.open(sessions, made[1])
    try:
        meta = store.meta()
        assert meta["task_settings"] == REFERENCE and candidate_rng.reference_on(meta)
        assert [e.kind for e in store.events(kinds=(ev.SESSION_STARTED,))] == [ev.SESSION_STARTED]
    finally:
        store.close()
