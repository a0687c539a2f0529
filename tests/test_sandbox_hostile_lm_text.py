"""Hostile LM prompt texts from a real sandboxed improver.

A candidate improver puts lone surrogates (a valid Python str that no encoding takes, so no
server can be sent it) in its system or user message. Each such call is refused: an exception
to the improver naming what is wrong and where, no use spent, no request sent, nothing
recorded. Valid text outside the BMP (an emoji) is sent as it is."""

from __future__ import annotations

import ast

import pytest
from lm_helpers import events_of, run_improver_on_scripted_lm

from stop_tui.engine import events as ev
from stop_tui.engine.lm.service import check_text

pytestmark = pytest.mark.timeout(120)

SURROGATES = r'''
def improve_algorithm(initial_solution, utility, language_model):
    tries = [
        ("prompt", "expert\ud800", "improve"),
        ("prompt", "expert", "improve \udfff please"),
        ("prompt", "expert", "\ude00\ud83d"),  # an emoji's UTF-16 halves, the wrong way round
        ("batch", "expert", ["fine", "bad\udc80"]),
        ("batch", "exp\ud800ert", ["fine"]),
    ]
    errors = []
    for kind, system, message in tries:
        try:
            if kind == "prompt":
                got = language_model.prompt(system, message)
            else:
                got = language_model.batch_prompt(system, message)
            errors.append("accepted: " + repr(got))
        except Exception as exc:
            errors.append(str(exc))
    good = language_model.prompt("expert \U0001F600", "improve \U0001F600", temperature=0.3)
    return repr({"errors": errors, "good": good, "uses": language_model.budget})
'''


def test_lone_surrogates_in_prompts_are_refused_before_anything_is_spent(sessions_dir):
    run = run_improver_on_scripted_lm(sessions_dir, SURROGATES, budget=3)
    out, lm, usage, bodies = run.out, run.lm, run.usage, run.requests
    assert out.error is None, out.error
    report = ast.literal_eval(out.value)  # our own repr of plain data from the test program
    errors = report["errors"]
    assert not [e for e in errors if e.startswith("accepted")], errors
    assert "expertise holds a lone surrogate (U+D800 at character 7)" in errors[0], errors[0]
    assert "message holds a lone surrogate (U+DFFF at character 9)" in errors[1], errors[1]
    assert "message holds a lone surrogate (U+DE00 at character 1)" in errors[2], errors[2]
    assert "message 2 holds a lone surrogate (U+DC80 at character 4)" in errors[3], errors[3]
    assert "expertise holds a lone surrogate (U+D800 at character 4)" in errors[4], errors[4]
    assert all("nothing was sent" in e for e in errors), errors
    # Only the good call was spent, counted and sent; the emoji went as it was.
    assert lm.uses == 1 and usage.calls == 1 and usage.failed == 0
    assert len(report["good"]) == 1 and report["good"][0]
    assert len(bodies) == 1
    assert [m["content"] for m in bodies[0]["messages"]] == ["expert \U0001F600", "improve \U0001F600"]
    requests = [e for e in events_of(sessions_dir, run.session) if e.kind == ev.LM_REQUEST]
    assert len(requests) == 1 and "refused" not in requests[0].data


def test_check_text_takes_valid_text_and_names_what_is_wrong():
    assert check_text("plain \U0001F600 text", "message") == "plain \U0001F600 text"
    with pytest.raises(TypeError, match="message must be a string, not int"):
        check_text(3, "message")
    with pytest.raises(ValueError, match=r"expertise holds a lone surrogate \(U\+DBFF at character 1\)"):
        check_text("\udbff", "expertise")
    # An emoji's UTF-16 halves in a Python str are two lone surrogates, not the emoji.
    with pytest.raises(ValueError, match=r"message 3 holds a lone surrogate \(U\+D83D at character 2\)"):
        check_text("x\ud83d\ude00", "message 3")
