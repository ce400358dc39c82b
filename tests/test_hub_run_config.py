"""``smartshelf hub run hub.toml`` (the configuration given as a path, as one would guess) runs the hub on that file,
as ``--config hub.toml`` does; the two ways at once must name the same file, else one line and exit 2, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import hub_commands, main
from hub.config import HubConfig
from tests.hub_support import short_dir, write_config


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[HubConfig]:
    """The configurations ``hub run`` would serve (the service itself is not started)."""
    seen: list[HubConfig] = []

    async def serve(cfg: HubConfig, status_interval_s: float | None) -> int:
        seen.append(cfg)
        return 0

    monkeypatch.setattr(hub_commands, "_serve", serve)
    return seen


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the hub's configuration in etc/hub.toml (and none in ./hub.toml)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etc").mkdir()
    with short_dir() as sockets:
        write_config(tmp_path / "etc", sockets, [])
    return tmp_path / "etc" / "hub.toml"


def test_the_configuration_given_as_a_path_is_run(
    shop: Path, served: list[HubConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hub", "run", "etc/hub.toml", "--log-level", "warning"]) == 0
    assert [c.path for c in served] == [Path("etc/hub.toml")]
    assert served[0].database.resolve() == shop.parent / "hub.db"
    assert main(["hub", "run", "--config", "etc/hub.toml"]) == 0  # the documented way, unchanged
    assert main(["hub", "run", "etc/hub.toml", "--config", str(shop)]) == 0  # the same file, spelled twice
    assert len(served) == 3 and capsys.readouterr().err == ""


def test_two_different_files_are_refused_in_one_line(
    shop: Path, served: list[HubConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    (shop.parent / "other.toml").write_text(shop.read_text())
    assert main(["hub", "run", "etc/hub.toml", "--config", "etc/other.toml"]) == 2
    assert capsys.readouterr().err == (
        "smartshelf hub: run: etc/hub.toml and --config etc/other.toml are two different files: give the hub's"
        " configuration once\n"
    )
    assert served == []


def test_without_a_configuration_the_default_is_still_hub_toml(
    shop: Path, served: list[HubConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hub", "run"]) == 2
    assert capsys.readouterr().err == "smartshelf hub: hub.toml: no such file\n"
    assert served == []
