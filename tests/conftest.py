"""Test harness: run the same test body under CPython and the real MicroPython (WebAssembly) runtime.

* ``mpy`` (session): a MicroPythonRuntime; one Node.js process serves every MicroPython test, each call in a
  fresh interpreter with ``shared_protocol/``, ``firmware/``, ``tools/emulation/`` and ``tests/portable/`` on its
  ``/lib``.
* ``runtime``: parametrized ``cpython`` / ``micropython``; ``runtime.call("tests.portable.x", "f", *args)``
  imports the module on that runtime and returns ``f(*args)`` as JSON. Put the portable code in
  ``tests/portable/`` (pure Python that runs on both) and keep the assertions in the test.

Tests that need MicroPython fail (never skip) when Node.js or the npm package is missing, so CI cannot
go green without them; set SMARTSHELF_ALLOW_NO_MPY=1 to skip them on a machine without Node.js.

The fleet tier's servers (tests/fleet_support.py): ``mosquitto`` / ``broker_factory`` (a real Mosquitto per test),
``postgres_server`` (one real PostgreSQL per session) and ``postgres_db`` (a fresh database per test); they fail the
same way when the servers are missing (SMARTSHELF_ALLOW_NO_FLEET=1 skips them), and carry the ``fleet`` marker.

``make test`` runs the suite on two pytest-xdist workers (tests/xdist_support.py): each module whole on one worker,
and the real-time tests (the ``slow`` marker, the benchmarks) one at a time on one worker while the other takes the
modules. A plain ``pytest`` runs everything in this process.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fleet_support import (  # noqa: F401 (fixtures)
    FLEET_FIXTURES,
    broker_factory,
    mosquitto,
    postgres_db,
    postgres_server,
)
from tests.xdist_support import (  # noqa: F401 (hooks)
    pytest_collection_finish,
    pytest_configure_node,
    pytest_handlecrashitem,
    pytest_runtest_protocol,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
)
from tools.mpy_runtime import REPO_ROOT, MicroPythonRuntime, MicroPythonUnavailable, find_node

pytest_plugins = ["tests.hub_fixtures"]  # sockdir, node, config of the hub-service tests (a module's own win)

PORTABLE_PACKAGES = (
    "shared_protocol",
    "firmware",
    (REPO_ROOT / "tools" / "emulation", "tools/emulation"),  # emulated sensors run beside the firmware
    (REPO_ROOT / "tests" / "portable", "tests/portable"),
)


class CPythonRuntime:
    name = "cpython"

    def call(self, module: str, func: str, *args: Any, timeout_s: float | None = None) -> Any:
        # Round-trip arguments and result through JSON so both runtimes see and return the same things.
        args = json.loads(json.dumps(list(args)))
        result = getattr(importlib.import_module(module), func)(*args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return json.loads(json.dumps(result))


class MicroPythonCaller:
    name = "micropython"

    def __init__(self, rt: MicroPythonRuntime) -> None:
        self._rt = rt

    def call(self, module: str, func: str, *args: Any, timeout_s: float | None = None) -> Any:
        return self._rt.call(module, func, *args, timeout_s=timeout_s)

    def exec(self, code: str, **kw: Any) -> Any:
        return self._rt.exec(code, **kw)


@pytest.fixture(scope="session")
def mpy_runtime() -> Iterator[MicroPythonRuntime]:
    rt = MicroPythonRuntime(packages=PORTABLE_PACKAGES)
    try:
        rt.start()
    except MicroPythonUnavailable as exc:
        if os.environ.get("SMARTSHELF_ALLOW_NO_MPY") == "1":
            pytest.skip(f"MicroPython unavailable and SMARTSHELF_ALLOW_NO_MPY=1: {exc}")
        pytest.fail(f"MicroPython runtime unavailable: {exc}", pytrace=False)
    yield rt
    rt.close()


@pytest.fixture
def emulated_boards() -> None:
    """Tests that start emulated boards (a Node.js process each): fail, never skip, when the runtime is missing
    (``SMARTSHELF_ALLOW_NO_MPY=1`` skips them)."""
    try:
        find_node()
    except MicroPythonUnavailable as exc:
        if os.environ.get("SMARTSHELF_ALLOW_NO_MPY") == "1":
            pytest.skip(f"MicroPython unavailable and SMARTSHELF_ALLOW_NO_MPY=1: {exc}")
        pytest.fail(f"MicroPython runtime unavailable: {exc}", pytrace=False)


@pytest.fixture
def mpy(mpy_runtime: MicroPythonRuntime) -> MicroPythonCaller:
    return MicroPythonCaller(mpy_runtime)


@pytest.fixture(params=["cpython", "micropython"])
def runtime(request: pytest.FixtureRequest) -> CPythonRuntime | MicroPythonCaller:
    if request.param == "cpython":
        return CPythonRuntime()
    return MicroPythonCaller(request.getfixturevalue("mpy_runtime"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        if "mpy" in names or "mpy_runtime" in names or params.get("runtime") == "micropython":
            item.add_marker(pytest.mark.micropython)
        if FLEET_FIXTURES.intersection(names):
            item.add_marker(pytest.mark.fleet)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fleet: starts a real Mosquitto or PostgreSQL (SMARTSHELF_ALLOW_NO_FLEET=1 skips)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    passed = terminalreporter.stats.get("passed", [])
    n = sum(1 for r in passed if "micropython" in r.keywords)
    terminalreporter.write_line(f"MicroPython-run tests passed: {n}")


@pytest.fixture
def env(tmp_path: Any) -> Iterator[Any]:
    """The status page's test environment (tests/web_support.py): a seeded ledger, its writer, the Flask app."""
    from tests.web_support import run_env

    yield from run_env(tmp_path)


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """Put the root logger back after each test: a command run in process (``hub run``, ``central run``) sets it up
    with ``basicConfig(force=True)`` on that test's captured stderr, which is closed afterwards (a later test logging
    there writes "--- Logging error ---" into its own stderr)."""
    import logging

    from _pytest.logging import LogCaptureHandler

    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:  # basicConfig's own (pytest's capture handlers are its subclasses: left alone)
        if type(handler) is logging.StreamHandler and handler not in before:
            root.removeHandler(handler)
    for handler in before - set(root.handlers):  # pytest's session-wide ones force=True removed (--log-cli-level,
        if not isinstance(handler, LogCaptureHandler):  # --log-file); its per-phase capture handlers are its own
            root.addHandler(handler)
    root.setLevel(level)
