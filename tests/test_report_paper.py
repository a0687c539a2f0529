"""The paper's numbers a report prints beside ours (engine/report/paper_numbers.toml): the
values of arXiv 2310.02304 as PAPER.md quotes them, each with where it comes from, and a
model's number found by its name with or without a date suffix."""

from __future__ import annotations

from stop_tui.engine import transfer
from stop_tui.engine.report import paper


def test_the_transfer_table_is_the_papers():
    assert paper.transfer_table() == {
        "grid": (0.439, 0.443, 0.567), "mqa": (0.204, 0.206, 0.221), "sat": (0.0, 0.212, 0.751),
        "maxcut": (0.0, 0.587, 0.742), "parity": (0.5, 0.593, 0.817)}
    assert transfer.PAPER == paper.transfer_table()  # `stop-tui transfer` prints the same
    assert "2310.02304" in paper.transfer_source() and "transfer table" in paper.transfer_source()


def test_rates_and_gains_by_model():
    assert paper.use_sandbox_off("gpt-4") == paper.use_sandbox_off("gpt-4-0314") == 0.0042
    assert paper.use_sandbox_off("gpt-3.5-turbo-0613") == 0.0012
    assert paper.use_sandbox_off("gpt-4o") is None and paper.use_sandbox_off("local") is None
    assert paper.gained("gpt-3.5-turbo") == (3, 25) and paper.gained("gpt-4") is None
    assert "0.42 % gpt-4, 0.12 % gpt-3.5-turbo" in paper.use_sandbox_off_source()
    assert "2310.02304" in paper.gained_source()
