"""An ``unassigned_lane`` alert (events of a lane with no SKU) resolves itself when the lane is assigned a SKU. Closed
by hand it opened again at the lane's next event: `smartshelf reconcile resolve` and the alerts page refuse it, with
the same line naming the commands that assign the lane (hub.reconcile.resolve.assign_instead)."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
from contextlib import closing, redirect_stderr, redirect_stdout
from pathlib import Path

from hub.cli import main
from hub.config import load_config
from hub.ledger import LedgerService, SensorEvent, Sku
from hub.ledger.models import now_ms
from hub.schema import MIGRATIONS
from shared_protocol.messages import KIND_PICK
from tests.web_support import Env

FIX = (
    "lane node5-lane3 has no SKU, and the alert resolves itself when the lane gets one (closed by hand, it would open"
    " again at the lane's next event): smartshelf hub command --config hub.toml 5 set-lane 3 SKU while the node is"
    " connected; or smartshelf ledger assign-lane --config hub.toml --node 5 --lane 3 --sku SKU, which the hub sends"
    " the node after its next hello"
)


def fix(config: str) -> str:
    """The line, naming the hub's hub.toml as ``config``."""
    return FIX.replace("--config hub.toml", f"--config {config}")


def event(seq: int) -> SensorEvent:
    """A pick of node 5's lane 3, which nobody assigned: the lane is registered and its alert opened."""
    return SensorEvent(5, seq, 3, KIND_PICK, -1, -3500, 95, now_ms())


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def alerts(db: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT id, status FROM alerts WHERE kind = 'unassigned_lane' ORDER BY id").fetchall()


def test_reconcile_resolve_refuses_it_and_says_how_to_assign_the_lane(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"

    async def book() -> None:
        async with LedgerService(db, migrations=MIGRATIONS) as ledger:
            await ledger.add_sku(Sku("COLA", "Cola", 3500, 20), actor="t")
            await ledger.submit(event(1))

    asyncio.run(book())
    [(alert, _)] = alerts(db)
    for outcome in ("fixed", "resolved"):
        rc, out, err = cli("reconcile", "resolve", str(alert), outcome, "--db", str(db))
        assert (rc, out, err) == (2, "", f"smartshelf reconcile: alert {alert} is not resolved by hand: {FIX}\n")
    # given the hub's config, the line names it
    config = tmp_path / "shop.toml"
    config.write_text('[hub]\ndatabase = "shop.db"\n')
    rc, out, err = cli("reconcile", "resolve", str(alert), "fixed", "--config", str(config))
    assert (rc, out) == (
        2,
        "",
    ) and err == f"smartshelf reconcile: alert {alert} is not resolved by hand: {fix(str(config))}\n"
    assert alerts(db) == [(alert, "open")]
    # what the line says does resolve it
    rc, out, err = cli("ledger", "assign-lane", "--node", "5", "--lane", "3", "--sku", "COLA", "--db", str(db))
    assert (rc, err) == (0, "")
    assert alerts(db) == [(alert, "resolved")]
    # resolved now: resolving it again says so, not that the lane has no SKU (a new user went round in that loop)
    rc, out, err = cli("reconcile", "resolve", str(alert), "fixed", "--db", str(db))
    assert (rc, out) == (2, "") and err == (
        f"smartshelf reconcile: alert {alert} is already resolved (lane assigned to COLA)\n"
    ), err


def test_the_alerts_page_offers_no_resolve_form_for_it_and_refuses_a_resolve(env: Env) -> None:
    env.write(lambda ledger: ledger.submit(event(1)))
    [(alert, _)] = alerts(env.db)
    manager = env.client("manager")
    html = manager.get("/alerts").get_data(as_text=True)
    row = html.split(f'<tr id="alert-{alert}">')[1].split("</tr>")[0]
    assert f"/alerts/{alert}/resolve" not in row and "Not resolved here: " + FIX.replace("'", "&#39;") in row
    assert f"/alerts/{alert}/acknowledge" in row  # acknowledging it (seen, being handled) still works
    shrinkage = env.sql("SELECT id FROM alerts WHERE kind = 'shrinkage'")[0][0]
    assert f"/alerts/{shrinkage}/resolve" in html  # other kinds keep their form

    resp = manager.post(
        f"/alerts/{alert}/resolve",
        data={"outcome": "resolved", "note": "done", "csrf_token": env.csrf(manager)},
        follow_redirects=True,
    )
    assert resp.status_code == 200
    flashed = re.sub(r"\s+", " ", resp.get_data(as_text=True)).replace("&#39;", "'")
    assert f"Alert {alert} not resolved: {FIX}" in flashed
    assert alerts(env.db) == [(alert, "open")]
    env.write(lambda ledger: ledger.submit(event(2)))  # and so no second alert opens at the lane's next event
    assert alerts(env.db) == [(alert, "open")]
    env.write(lambda ledger: ledger.assign_lane(5, 3, "COLA", actor="t"))  # the lane assigned: its alert resolved
    assert alerts(env.db) == [(alert, "resolved")]
    html = manager.get("/alerts?status=resolved").get_data(as_text=True)
    row = html.split(f'<tr id="alert-{alert}">')[1].split("</tr>")[0]
    assert "Not resolved here" not in row
    resp = manager.post(
        f"/alerts/{alert}/resolve",
        data={"outcome": "resolved", "csrf_token": env.csrf(manager)},
        follow_redirects=True,
    )
    flashed = re.sub(r"\s+", " ", resp.get_data(as_text=True)).replace("&#39;", "'")
    assert f"Alert {alert} not resolved: alert {alert} is already resolved (lane assigned to COLA)" in flashed
    assert "has no SKU" not in flashed


def test_the_page_names_the_running_hubs_config(env: Env) -> None:
    env.app.config["HUB_CONFIG"] = "/etc/smartshelf/hub.toml"  # as WebServer.start sets it from the hub's config
    env.write(lambda ledger: ledger.submit(event(1)))
    [(alert, _)] = alerts(env.db)
    manager = env.client("manager")
    html = manager.get("/alerts").get_data(as_text=True)
    row = html.split(f'<tr id="alert-{alert}">')[1].split("</tr>")[0]
    assert "Not resolved here: " + fix("/etc/smartshelf/hub.toml").replace("'", "&#39;") in row
    resp = manager.post(
        f"/alerts/{alert}/resolve", data={"outcome": "resolved", "csrf_token": env.csrf(manager)}, follow_redirects=True
    )
    flashed = re.sub(r"\s+", " ", resp.get_data(as_text=True)).replace("&#39;", "'")
    assert f"Alert {alert} not resolved: {fix('/etc/smartshelf/hub.toml')}" in flashed


def test_the_web_config_knows_its_hub_toml(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[hub]\ndatabase = "shop.db"\n[web]\nport = 0\n')
    web = load_config(config).web
    assert web is not None and web.hub_config == config.absolute()
