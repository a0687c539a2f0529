"""Hostile LM parameters from a real sandboxed improver (issue 14, item 8).

A candidate improver passes NaN, "nan", infinities, strings, None and wrong types for the LM's
parameters. Each call is an exception to the improver that names what was wrong; none spends a
use, none reaches the server, and the session's log stays strict JSON (no `NaN`)."""

from __future__ import annotations

import ast
import json
import sqlite3

import pytest
from lm_helpers import run_improver_on_scripted_lm

from stop_tui.engine import events as ev

pytestmark = pytest.mark.timeout(120)

BAD_PARAMETERS = r'''
def improve_algorithm(initial_solution, utility, language_model):
    tries = [
        ("prompt", dict(temperature=float("nan"))),
        ("prompt", dict(temperature="nan")),
        ("prompt", dict(temperature=float("inf"))),
        ("prompt", dict(temperature=float("-inf"))),
        ("prompt", dict(temperature="0.5")),
        ("prompt", dict(temperature=None)),
        ("prompt", dict(temperature=[0.5])),
        ("prompt", dict(n_responses=True)),
        ("prompt", dict(n_responses="2")),
        ("prompt", dict(n_responses=1.5)),
        ("prompt", dict(n_responses=float("nan"))),
        ("prompt", dict(n_responses=0)),
        ("batch", dict(temperature=float("nan"))),
        ("batch", dict(message_batch=["ok", 3])),
        ("batch", dict(temperature="hot")),
    ]
    errors = []
    for kind, kwargs in tries:
        try:
            if kind == "prompt":
                language_model.prompt("expert", "improve", **kwargs)
            else:
                batch = kwargs.pop("message_batch", ["improve"])
                language_model.batch_prompt("expert", batch, **kwargs)
            errors.append("accepted")
        except Exception as exc:
            errors.append(str(exc))
    good = language_model.prompt("expert", "improve", n_responses=1, temperature=0.3)
    return repr({"errors": errors, "good": len(good)})
'''


def strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in the log")

    return json.loads(text, parse_constant=refuse)


def test_bad_lm_parameters_are_exceptions_with_no_use_spent(sessions_dir):
    run = run_improver_on_scripted_lm(sessions_dir, BAD_PARAMETERS, budget=2)
    out, lm, bodies = run.out, run.lm, run.requests
    assert out.error is None, out.error
    report = ast.literal_eval(out.value)  # our own repr of plain data from the test program
    errors = report["errors"]
    assert "accepted" not in errors, errors
    assert all("temperature must be a finite number" in e for e in errors[0:1] + errors[2:4]), errors
    assert all("temperature must be a number, not" in e for e in (errors[1], errors[4], errors[5], errors[6]))
    assert all("n_responses must be a whole number" in e for e in errors[7:11]), errors[7:11]
    assert "n_responses must be between 1 and 2" in errors[11]
    assert "temperature must be a finite number" in errors[12]
    assert "every message must be a string" in errors[13]
    assert "temperature must be a number, not str" in errors[14]
    # Only the good call was spent and sent; its temperature is the one asked for.
    assert report["good"] == 1 and lm.uses == 1
    assert len(bodies) == 1 and bodies[0]["temperature"] == 0.3
    con = sqlite3.connect(sessions_dir / run.session / "session.db")
    rows = con.execute("SELECT kind, data FROM events").fetchall()
    con.close()
    for _, data in rows:
        strict_json(data)  # raises on NaN / Infinity
    requests = [strict_json(d) for k, d in rows if k == ev.LM_REQUEST]
    assert len(requests) == 1 and requests[0]["temperature"] == 0.3
