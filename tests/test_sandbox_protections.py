"""One vocabulary of protection names: the worker reports its live checks under the names the
pool reports (the SANDBOX event, `stop-tui doctor`), protections.NAMES."""

from __future__ import annotations

import pytest

from stop_tui.engine.sandbox import probes
from stop_tui.engine.sandbox.protections import CHECKED_LIVE, NAMES

pytestmark = pytest.mark.timeout(120)


def test_the_worker_reports_its_checks_under_the_protection_names(tmp_path):
    found = probes.checks({"scratch": str(tmp_path), "read_only_rest": True},
                          subreaper=True, scratch_error="switched off")
    assert set(CHECKED_LIVE) | {"scratch_size_cap"} <= set(found) <= set(NAMES) | set(probes.NOTES)
    assert found["kill_descendants"] is True and found["per_run_scratch"] is False
    assert found["per_run_scratch_error"] == "switched off"
