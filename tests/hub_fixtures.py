"""Pytest fixtures of the hub-service tests, imported by the modules that use them: a short directory for the
control socket (Unix socket paths are limited to ~100 bytes), node 1 as a ``FakeNode`` on a real pty (4 lanes), and
a ``hub.toml`` for that node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.hub_support import KEY1, FakeNode, short_dir, write_config


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with short_dir() as d:
        yield d


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FakeNode]:
    n = FakeNode(1, KEY1, tmp_path / "node-1")  # 4 lanes
    n.plug()
    yield n
    n.unplug()


@pytest.fixture
def config(tmp_path: Path, sockdir: Path, node: FakeNode) -> Path:
    return write_config(tmp_path, sockdir, [node])
