"""One local Ray instance per test module (Ray starts in 2-8 s here: share it, do not start one
per test).

    from ray_helpers import ray_local          # the module-scoped fixture, num_cpus=2

    def test_x(ray_local):
        ray_local.address                      # pass it on: RAY_ADDRESS / --ray-address
        ray_local.env()                        # environment for a subprocess joining it

A module that needs other custom resources (one per LM endpoint) makes its own fixture:

    @pytest.fixture(scope="module")
    def ray_endpoints():
        with local_ray(resources={"lm:127.0.0.1:8000": 4}) as instance:
            yield instance

Ray workers inherit the driver's environment (PYTHONPATH, STOP_TUI_* variables): this tree and its
tests folder are put first on PYTHONPATH before the instance starts, so tasks import the code under
test, and a task defined in a test module (or using lm_helpers, scripted_server...) is found.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Small on purpose: several local instances may share this machine's /dev/shm.
OBJECT_STORE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class LocalRay:
    address: str  # the GCS address (host:port) a driver in another process connects to
    num_cpus: int
    resources: dict[str, float]

    def env(self, **extra: str) -> dict[str, str]:
        """os.environ for a subprocess (stop-tui sweep, a second driver) that joins this instance."""
        env = dict(os.environ)
        env["RAY_ADDRESS"] = self.address
        env.update(extra)
        return env


@contextmanager
def local_ray(*, num_cpus: int = 2, resources: dict[str, float] | None = None) -> Iterator[LocalRay]:
    """Start a fresh local Ray instance (never one found on the machine: address="local"), yield it,
    shut it down. Skips the test when Ray is not installed."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # left over by a module that did not use this helper
        ray.shutdown()
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED")}
    first = [str(ROOT), str(ROOT / "tests")]
    path = [*first, *[p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p and p not in first]]
    os.environ["PYTHONPATH"] = os.pathsep.join(path)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        context = ray.init(address="local", num_cpus=num_cpus, resources=resources or None,
                           include_dashboard=False, log_to_driver=False,
                           object_store_memory=OBJECT_STORE_BYTES)
        try:
            yield LocalRay(address=context.address_info["gcs_address"], num_cpus=num_cpus,
                           resources=dict(resources or {}))
        finally:
            ray.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ray_local() -> Iterator[LocalRay]:
    """One local Ray instance (2 CPUs, no dashboard) for the whole test module."""
    with local_ray() as instance:
        yield instance
