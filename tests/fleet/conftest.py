"""The fleet path (deploy/, requirements-fleet.txt): run by `make test-fleet`, which installs requirements-fleet.txt
first; `make test` deselects these tests (marker `fleet`).

Without dagster-k8s / dagster-postgres or Debian's postgresql they are skipped on a developer's machine and fail in CI
(CI set) or under `make test-fleet` (NEURONFORGE_FLEET_TESTS=1): a check that could not run does not pass.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from pg_server import DEBIAN_PACKAGE, PostgresServer, find_bindir

from neuronforge.hub import HubServer

FLEET_PACKAGES = ("dagster_k8s", "dagster_postgres", "psycopg2")


def required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("NEURONFORGE_FLEET_TESTS") == "1"


def unavailable(reason: str) -> None:
    if required():
        pytest.fail(f"{reason} (required here: CI or make test-fleet)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fleet_packages() -> None:
    missing = [name for name in FLEET_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed: `make test-fleet` installs requirements-fleet.txt")


@pytest.fixture(scope="module")
def postgres(fleet_packages) -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        unavailable(f"PostgreSQL server binaries not found: apt-get install {DEBIAN_PACKAGE} (.ci/run does)")
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> HubServer:
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server
