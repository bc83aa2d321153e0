"""Shared test setup: no network, deterministic hypothesis profiles, tiny models only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from forebear.zoo.build import ZooBuild

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One zoo cache folder for every xdist worker of this run."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return root / "zoo-cache"


@pytest.fixture(scope="session")
def mini(tmp_path_factory: pytest.TempPathFactory, zoo_cache: Path) -> ZooBuild:
    """The mini zoo, trained once per test run (a file lock shares it between workers)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    filelock = pytest.importorskip("filelock")
    from forebear.zoo.build import run_build
    from forebear.zoo.profiles import profile_specs

    out = tmp_path_factory.mktemp("zoo-mini")
    zoo_cache.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(zoo_cache / "build.lock")):
        return run_build(profile_specs("mini"), out, profile="mini", cache=zoo_cache)
