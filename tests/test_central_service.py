"""The central tier as systemd services: ``smartshelf central install-service [run] [serve]`` writes the units of the
consumer and the page (the hub's sandboxing, a dedicated user, restart with back-off where systemd has one), leaves
central.toml to the operator, and ``systemd-analyze verify`` accepts the units."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hub.central.service import CONFIG, RESTART_STEPS_SINCE, UNITS, systemd_version, tls_dir, unit_text
from hub.service.install import HARDENING
from tests.test_service import needs
from tools.mpy_runtime import REPO_ROOT

SMARTSHELF = Path(sys.executable).with_name("smartshelf")


def install_service(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "central", "install-service", "--root", str(root), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def unit_lines(root: Path, which: str) -> list[str]:
    return (root / "etc/systemd/system" / UNITS[which]).read_text().splitlines()


def test_install_service_writes_both_units_with_the_hubs_sandboxing_and_never_central_toml(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = install_service(root)
    assert r.returncode == 0, r
    assert f"no {CONFIG} yet: write it before starting" in r.stdout, r
    assert f"then: systemctl daemon-reload; systemctl enable --now {UNITS['run']} {UNITS['serve']}" in r.stdout
    assert not (root / CONFIG.relative_to("/")).exists()
    for which in ("run", "serve"):
        unit = root / "etc/systemd/system" / UNITS[which]
        assert stat.S_IMODE(unit.stat().st_mode) == 0o644
        lines = unit_lines(root, which)
        for line in (
            f"ExecStart={SMARTSHELF} central {which} --config {CONFIG}",
            "User=smartshelf-central",
            "Group=smartshelf-central",
            "Wants=network-online.target",
            "Restart=on-failure",
            "RestartPreventExitStatus=2",  # configuration, extra missing, newer schema: a restart cannot fix it
            "StartLimitIntervalSec=0",  # never given up: PostgreSQL away for an hour must not leave it failed
            "PrivateDevices=yes",
            *HARDENING.splitlines(),  # every line of the hub's sandboxing, from the same code
        ):
            assert line in lines, (which, line)
        (after,) = [x for x in lines if x.startswith("After=")]
        wanted = {"network-online.target", "postgresql.service"} | ({"mosquitto.service"} if which == "run" else set())
        assert set(after.removeprefix("After=").split()) == wanted, after
        writable = [x for x in lines if x.startswith("ReadWritePaths=")]
        assert writable == ([f"ReadWritePaths=-{tls_dir(CONFIG)}"] if which == "serve" else []), writable
    staged_tls = root / tls_dir(CONFIG).relative_to("/")
    assert staged_tls.is_dir() and stat.S_IMODE(staged_tls.stat().st_mode) == 0o700

    # one of them, another config; central.toml present: kept as it is, and --enable (on a staged root) lists the
    # commands instead of running them
    other = tmp_path / "other"
    config = Path("/srv/central/central.toml")
    staged = other / config.relative_to("/")
    staged.parent.mkdir(parents=True)
    staged.write_text("[central]\n")
    r = install_service(other, "run", "--config", str(config), "--enable")
    assert r.returncode == 0, r
    assert sorted(p.name for p in (other / "etc/systemd/system").iterdir()) == [UNITS["run"]]
    assert f"ExecStart={SMARTSHELF} central run --config {config}" in unit_lines(other, "run")
    assert "then: systemctl daemon-reload; systemctl enable --now smartshelf-central.service" in r.stdout, r
    assert staged.read_text() == "[central]\n" and "write it before starting" not in r.stdout
    assert not (other / tls_dir(config).relative_to("/")).exists()  # no page, no certificate folder


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["web"], "web: the services are run and serve"),
        (["--config", "central.toml"], "--config: central.toml must be an absolute path"),
        (["--enable"], f"--enable: {CONFIG} does not exist; write it first"),
        (["--executable", "bin/smartshelf"], "--executable: bin/smartshelf is not an executable file"),
    ],
)
def test_install_service_refuses_bad_arguments_and_writes_nothing(tmp_path: Path, extra: list[str], says: str) -> None:
    r = install_service(tmp_path / "root", *extra)
    assert r.returncode == 2 and says in r.stderr, r
    assert not (tmp_path / "root").exists()


def test_restart_backs_off_where_systemd_can_and_waits_a_fixed_delay_where_it_cannot() -> None:
    new = unit_text("run", SMARTSHELF, systemd=RESTART_STEPS_SINCE).splitlines()
    assert {"RestartSec=5s", "RestartSteps=6", "RestartMaxDelaySec=5min"} <= set(new), new
    for old in (unit_text("run", SMARTSHELF, systemd=252), unit_text("serve", SMARTSHELF, systemd=None)):
        lines = old.splitlines()
        assert "RestartSec=30s" in lines and not [x for x in lines if x.startswith(("RestartSteps", "RestartMax"))]


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    needs("systemd-analyze", "systemctl")
    root = tmp_path / "root"
    assert install_service(root).returncode == 0
    units = [str(root / "etc/systemd/system" / u) for u in UNITS.values()]
    version = systemd_version()
    assert version is not None
    steps = any(x.startswith("RestartSteps=") for x in unit_lines(root, "run"))
    assert steps == (version >= RESTART_STEPS_SINCE)  # written for this machine's systemd
    r = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    out = r.stdout + r.stderr
    assert not [u for u in UNITS.values() if u in out], out  # no warning about our units
