"""The suite on pytest-xdist workers (``make test``: ``pytest -n 2 --dist loadgroup``), imported by tests/conftest.py.

``--dist loadgroup`` here is xdist's, with two differences:

* a test in no group goes with its module (as under ``--dist loadfile``), not alone: a module's fixtures are built
  once and its tests run in their order, on one worker;
* the groups reach the controller in a file, not as an ``@group`` suffix of the node ids: pytest 9.2's structured
  node ids drop that suffix, so xdist 3.8's own ``loadgroup`` silently spreads a group over every worker
  (pytest-dev/pytest-xdist#1386).

A group is an ``xdist_group`` marker's name, or ``realtime`` for the real-time tests (``runs_alone``): that group is
handed out first, it being the longest unit of work, and one worker runs its tests one after another, never two at
once, while the other workers take the modules.

A hung test cannot stall the run: pytest-timeout's signal (``timeout`` in pyproject.toml) fails it, but an asyncio
test can outlive that signal (the exception it raises inside an event loop callback is logged by the loop and
dropped). A worker whose test runs ``HANG_GRACE_S`` past its timeout writes every thread's stack and every asyncio
task's, and exits; xdist reports the test failed, with those stacks, and starts a new worker for the rest.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import io
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # a venv from before pytest-xdist was a dev dependency: the suite still runs in one process
    LoadScopeScheduling = object  # type: ignore[assignment,misc]

REALTIME = "realtime"
GROUPS_DIR = "smartshelf_groups_dir"  # workerinput key: where each worker writes {node id: group} and its hang report
HANG_GRACE_S = 60.0
_groups_dir = pytest.StashKey[Path]()


def runs_alone(item: pytest.Item) -> bool:
    """A real-time scenario (``slow``: emulated boards, hubs and servers at the wall clock's pace, deadlines in
    seconds) or a benchmark (``test_*_bench.py``, ``test_bench_*``: it loads the cores on purpose): never beside
    another of them."""
    bench = item.path.name.endswith("_bench.py") or item.name.startswith("test_bench_")
    return bench or item.get_closest_marker("slow") is not None


def group_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    return REALTIME if runs_alone(item) else None


@pytest.hookimpl(optionalhook=True)  # xdist's hooks: unknown under -p no:xdist
def pytest_configure_node(node: Any) -> None:
    """Controller, before a worker starts: the directory the workers write their groups to."""
    stash = node.config.stash
    if _groups_dir not in stash:
        stash[_groups_dir] = Path(tempfile.mkdtemp(prefix="smartshelf-xdist-"))
    node.workerinput[GROUPS_DIR] = str(stash[_groups_dir])


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook tells the controller that this worker has collected
def pytest_collection_finish(session: pytest.Session) -> None:
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is None or GROUPS_DIR not in workerinput:
        return
    groups = {item.nodeid: group for item in session.items if (group := group_of(item)) is not None}
    path = Path(workerinput[GROUPS_DIR]) / f"{workerinput['workerid']}.json"
    path.with_suffix(".tmp").write_text(json.dumps(groups))
    os.replace(path.with_suffix(".tmp"), path)


def _timeout_s(item: pytest.Item) -> float:
    """pytest-timeout's limit for ``item`` (its marker, --timeout, or the ini's); 0 for none."""
    mark = item.get_closest_marker("timeout")
    value = mark.args[0] if mark is not None and mark.args else item.config.getoption("timeout", None)
    return float(value if value is not None else item.config.getini("timeout") or 0)


def _task_stacks(loop: asyncio.AbstractEventLoop) -> str:
    """Every task's stack on ``loop`` (running in another thread), as the loop itself prints them."""
    out = io.StringIO()
    done = threading.Event()

    def show() -> None:
        for task in asyncio.all_tasks(loop):
            out.write(f"--- {task!r}\n")
            task.print_stack(file=out)
        done.set()

    loop.call_soon_threadsafe(show)
    return out.getvalue() if done.wait(10) else "(the loop did not answer within 10 s)\n"


def _hang_report(nodeid: str, limit_s: float) -> str:
    out = io.StringIO()
    out.write(f"{nodeid} still running {limit_s:.0f} s after it started: the worker dumps its stacks and exits\n")
    with tempfile.TemporaryFile("w+") as f:  # faulthandler writes to a real file
        faulthandler.dump_traceback(file=f, all_threads=True)
        f.seek(0)
        out.write(f.read())
    for loop in [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]:
        out.write("\nasyncio tasks:\n" + _task_stacks(loop))
    return out.getvalue()


def _hung(item: pytest.Item, limit_s: float, path: Path) -> None:
    try:
        path.write_text(_hang_report(item.nodeid, limit_s))
    finally:
        os._exit(1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Any:
    workerinput = getattr(item.config, "workerinput", None)
    timeout_s = _timeout_s(item)
    if workerinput is None or GROUPS_DIR not in workerinput or timeout_s <= 0:
        return (yield)
    limit_s = timeout_s + HANG_GRACE_S
    path = Path(workerinput[GROUPS_DIR]) / f"hang-{workerinput['workerid']}.txt"
    timer = threading.Timer(limit_s, _hung, args=(item, limit_s, path))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: Any) -> None:
    """Controller: a worker died in ``crashitem``; its hang report, if it wrote one, goes into the failure."""
    config = getattr(sched, "config", None)
    if config is None or _groups_dir not in config.stash:
        return
    path = config.stash[_groups_dir] / f"hang-{report.node.gateway.id}.txt"  # type: ignore[attr-defined]
    if path.exists():
        report.longrepr = f"{report.longrepr}\n{path.read_text()}"
        path.unlink()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _groups_dir in config.stash:
        shutil.rmtree(config.stash[_groups_dir], ignore_errors=True)


class ModuleOrGroup(LoadScopeScheduling):
    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self._groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:  # every worker has collected (and written its file) before the first call
            files = sorted(self.config.stash[_groups_dir].glob("*.json"))
            if not files:
                raise RuntimeError("no worker wrote its xdist groups (tests/xdist_support.py)")
            self._groups = {k: v for f in files for k, v in json.loads(f.read_text()).items()}
        return self._groups.get(nodeid) or nodeid.split("::", 1)[0]

    def _assign_work_unit(self, node: Any) -> None:
        if REALTIME in self.workqueue:
            self.workqueue.move_to_end(REALTIME, last=False)
        super()._assign_work_unit(node)

    def remove_node(self, node: Any) -> str | None:
        """A worker is gone: the test it died in is reported failed (by xdist) and not run again, what it had not
        run yet goes back to the queue. (xdist 3.8 puts the test it died in back too: a test that kills its worker
        would kill every new one, until xdist gives up on the run.)"""
        workload = self.assigned_work.pop(node)
        pending = [nodeid for unit in workload.values() for nodeid, done in unit.items() if not done]
        if not pending:
            return None
        for unit in workload.values():
            if pending[0] in unit:
                unit[pending[0]] = True
        self.workqueue.update((scope, unit) for scope, unit in workload.items() if not all(unit.values()))
        for other in self.assigned_work:
            self._reschedule(other)
        return pending[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return ModuleOrGroup(config, log) if config.getvalue("dist") == "loadgroup" else None
