"""``smartshelf flash --config hub.toml`` beside a running hub (in process, its real control socket): a nodes file
the hub does not read is refused before the board is touched, and after the install the hub reloads its nodes files
whether the node is new or not; a node it still does not serve is a failure, never a silent success. The install
itself (``_install``: the board, mpremote, the hello) is ``tests/test_flash.py``'s; here it is replaced by what it
leaves behind (the node's table in the nodes file, or nothing)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hub.provisioning import flash as flash_mod
from hub.provisioning.device import DeviceError
from hub.provisioning.flash import Request, UsageError, flash
from hub.provisioning.registry import register
from hub.service import HubService
from tests.hub_support import KEY1, FakeNode, start_hub, write_config


@pytest.fixture
def nodes_file(tmp_path: Path) -> Path:
    path = tmp_path / "provisioned.toml"
    path.write_text("")
    path.chmod(0o600)
    return path


@pytest.fixture
def config(tmp_path: Path, sockdir: Path, nodes_file: Path) -> Path:
    node = FakeNode(1, KEY1, tmp_path / "node-1")  # never plugged: the hub waits for its port
    return write_config(tmp_path, sockdir, [node], extra=f'nodes_files = ["{nodes_file.name}"]')


@pytest.fixture
async def hub(config: Path) -> AsyncIterator[HubService]:
    service = await start_hub(config)
    yield service
    await service.stop()


def installs(monkeypatch: pytest.MonkeyPatch, node_id: int, registers: Path | None) -> None:
    """``_install`` as a board would leave it: ``node_id`` flashed, its table put in ``registers`` (if given)."""

    def install(port: str, hub: Any, req: Request, out: Callable[[str], None]) -> tuple[int, bool]:
        if registers is not None:
            register(registers, node_id, secrets.token_bytes(32), f"/dev/ttyNOPE{node_id}")
        return node_id, False  # a re-flash: the node's key was already in the nodes file

    monkeypatch.setattr(flash_mod, "_install", install)


async def test_a_nodes_file_the_hub_does_not_read_is_refused_before_the_board_is_touched(
    hub: HubService, config: Path, tmp_path: Path
) -> None:
    stray = tmp_path / "x" / "provisioned-nodes.toml"
    req = Request(node_id=7, layout=tmp_path / "shelf-a.json", nodes_file=stray, hub_config=config)
    with pytest.raises(UsageError) as refused:
        await asyncio.to_thread(flash, "/dev/does-not-exist", req)
    message = str(refused.value)
    assert f"--nodes-file {stray} is not listed in hub.nodes_files of {config}" in message and "\n" not in message
    assert not stray.exists()


async def test_a_reflashed_node_the_hub_did_not_serve_is_served_after_a_reload(
    hub: HubService, config: Path, nodes_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installs(monkeypatch, 7, nodes_file)  # its table is in a file the hub reads, but the hub has not reread it
    assert hub.ingest is not None and 7 not in hub.ingest.nodes
    said: list[str] = []
    await asyncio.to_thread(flash, "/dev/ttyNOPE7", Request(nodes_file=nodes_file, hub_config=config), said.append)
    assert said == ["the running hub serves node 7 now"]
    assert 7 in hub.ingest.nodes


async def test_a_node_the_running_hub_does_not_serve_after_the_flash_is_a_failure(
    hub: HubService, config: Path, nodes_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installs(monkeypatch, 8, None)  # its key is nowhere the hub reads
    said: list[str] = []
    with pytest.raises(DeviceError, match="node 8 is installed, but the running hub does not serve it"):
        await asyncio.to_thread(flash, "/dev/ttyNOPE8", Request(hub_config=config), said.append)
    assert said == []
