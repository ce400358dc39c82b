"""The status page in a real browser: headless Chromium (Debian's) driven by Playwright against a live hub.

One hub for the module (tests/browser_support.py ``LiveHub``): the real HubService with the status page served by
waitress on a free port, and two FakeNode shelves on real ptys, so a test can make a node report a pick and watch
the page. Each test signs in through the login form in a fresh browser context (its own cookies). A screenshot of
each step goes to test-artifacts/screenshots/ (gitignored; CI keeps the folder for a look after a failure).

Fails, never skips, when Chromium or Playwright is missing (`make bootstrap` installs both);
SMARTSHELF_ALLOW_NO_BROWSER=1 skips instead, for a machine without them.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hub.web.accounts.users import set_disabled
from tests.browser_support import (
    ALLOW_NO_BROWSER,
    LANES,
    PASSWORD,
    LiveHub,
    browser_unavailable,
    launch_chromium,
    screenshot_path,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

pytestmark = pytest.mark.browser

LIVE_UPDATE_S = 2.0  # a pick must show on an open overview within this long of the node sending it
PHONE = {"width": 390, "height": 844}
# the pages' policy (hub/web/headers.py; every response's headers: tests/test_web_headers.py)
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Every document reports what its policy refused on the console (Chromium also logs its own "Refused to ..." line)
CSP_WATCH = """document.addEventListener("securitypolicyviolation", e => console.error(
    "csp-violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at "
    + (e.sourceFile || location.href) + ":" + e.lineNumber), true);"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    why = browser_unavailable()
    if why is not None:
        if os.environ.get(ALLOW_NO_BROWSER) == "1":
            pytest.skip(f"browser unavailable and {ALLOW_NO_BROWSER}=1: {why}")
        pytest.fail(f"browser tests cannot run: {why} (or set {ALLOW_NO_BROWSER}=1 to skip them)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[LiveHub]:
    hub = LiveHub(tmp_path_factory.mktemp("browser")).start()
    try:
        yield hub
    finally:
        hub.stop()


def sign_in(
    browser: Browser, live: LiveHub, username: str, path: str = "/", watch: list[str] | None = None, **context: Any
) -> Page:
    """A fresh browser context; open ``path``, get sent to the login form, sign in through it, land on ``path``.
    ``watch``: collects the console errors (policy violations among them: ``csp_problems``) and uncaught script
    errors of every page from the first."""
    page = browser.new_context(accept_downloads=True, ignore_https_errors=True, **context).new_page()
    page.set_default_timeout(10_000)
    if watch is not None:
        page.context.add_init_script(CSP_WATCH)
        page.on("console", lambda msg: _console(watch, msg))
        page.on("pageerror", lambda exc: watch.append(f"script error: {exc}"))
    page.goto(live.url + path)
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form.login button[type=submit]")
    assert page.url.split("?")[0] == live.url + path.split("?")[0], page.url
    return page


def _console(watch: list[str], msg: ConsoleMessage) -> None:
    # the browser's own request for /favicon.ico (the hub has none: 404) is not the page's doing
    if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
        watch.append(f"console {msg.type}: {msg.text} ({msg.location.get('url')})")


def csp_problems(watch: list[str]) -> list[str]:
    """What the pages' policy refused: our own reports and Chromium's ("Refused to ... Content Security Policy")."""
    return [m for m in watch if "csp-violation" in m or "Content Security Policy" in m]


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(screenshot_path(name)), full_page=True)


def counts_on_page(page: Page) -> dict[str, int]:
    cells = page.eval_on_selector_all(
        "tr[id^=lane-] td.count", "cells => cells.map(c => [c.closest('tr').id.slice(5), c.dataset.count])"
    )
    return {lane: int(count) for lane, count in cells}


# ----------------------------------------------------------------------------------------------------- (a)


def test_sign_in_through_the_form_and_see_every_lane(browser: Browser, live: LiveHub) -> None:
    page = browser.new_context(ignore_https_errors=True).new_page()
    page.set_default_timeout(10_000)
    page.goto(live.url + "/")
    assert page.url.startswith(live.url + "/login")  # anonymous: sent to the login form
    shot(page, "a1-login-form")
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", "not the password")
    page.click("form.login button[type=submit]")
    assert "Wrong username or password." in page.inner_text(".error")
    shot(page, "a2-login-wrong-password")
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form.login button[type=submit]")
    assert page.url == live.url + "/"
    assert page.inner_text("h1")
    assert "vera" in page.inner_text("header")
    assert counts_on_page(page) == live.counts()
    assert set(counts_on_page(page)) == {lane for _, _, lane, _, _ in LANES}
    shot(page, "a3-overview-signed-in")
    page.context.close()


# ----------------------------------------------------------------------------------------------------- (b)


def test_overview_shows_a_pick_within_two_seconds_without_reloading(browser: Browser, live: LiveHub) -> None:
    watch: list[str] = []
    page = sign_in(browser, live, "vera", "/", watch=watch)
    # the page opens its event stream by itself: load it again, waiting until the server answered the stream
    with page.expect_response(lambda r: "/events" in r.url and r.status == 200, timeout=10_000):
        document = page.reload()
    assert document is not None and document.headers.get("content-security-policy") == PAGE_CSP
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.evaluate("window.__sameDocument = true")
    delays = []
    for lane, units in (("A1", 1), ("B1", 2), ("A1", 1)):
        before = live.counts()[lane]
        assert counts_on_page(page)[lane] == before
        sent = live.pick(lane, units)
        page.wait_for_selector(
            f'#lane-{lane} td.count[data-count="{before - units}"]', timeout=LIVE_UPDATE_S * 1000 + 500
        )
        delays.append(time.monotonic() - sent)
        assert live.counts()[lane] == before - units  # the ledger booked it
        assert page.inner_text(f"#lane-{lane} td.count").strip().startswith(str(before - units))
    shot(page, "b1-overview-after-picks")
    print(f"pick -> count cell updated: {', '.join(f'{d * 1000:.0f} ms' for d in delays)}")
    assert max(delays) < LIVE_UPDATE_S, delays
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    assert navigations == [], navigations
    assert counts_on_page(page) == live.counts()
    assert watch == [], watch  # the script ran under the policy: nothing refused, no script error
    page.context.close()


def test_a_disabled_user_is_sent_from_the_live_overview_to_the_login_form(browser: Browser, live: LiveHub) -> None:
    """Over HTTPS, as the hub serves it: the open stream notices within seconds and the page leaves for the login."""
    page = sign_in(browser, live, "dora", "/")
    assert page.url.startswith("https://")
    page.wait_for_selector("#live.on", timeout=10_000)  # the stream is open
    live.call(lambda: hub_ledger(live).transact(lambda tx: set_disabled(tx, "dora", True, actor="web:ada")))
    page.wait_for_url("**/login**", timeout=10_000)  # signed-out event -> reload -> the login form
    assert "/login" in page.url
    page.context.close()


# ----------------------------------------------------------------------------------------------------- (c)


def test_manager_resolves_an_alert_through_the_form(browser: Browser, live: LiveHub) -> None:
    (alert_id,) = live.query("SELECT id FROM alerts WHERE cause_key = 'lane:B3/BEER' AND status != 'resolved'")[0]
    unresolved = {i for (i,) in live.query("SELECT id FROM alerts WHERE status != 'resolved'")}
    page = sign_in(browser, live, "mia", "/alerts")
    row = page.locator(f"#alert-{alert_id}")
    assert row.count() == 1
    form = row.locator("form.resolve")
    outcomes = form.locator("select[name=outcome] option").evaluate_all("options => options.map(o => o.value)")
    assert "damaged" in outcomes, outcomes
    form.locator("select[name=outcome]").select_option("damaged")
    form.locator("input[name=qty]").fill("1")
    form.locator("input[name=note]").fill("crushed crate")
    shot(page, "c1-alerts-before-resolve")
    with page.expect_navigation():
        form.get_by_role("button", name="Resolve").click()
    flash = page.inner_text(".flash")
    assert str(alert_id) in flash and "not resolved" not in flash, flash
    assert page.locator(f"#alert-{alert_id}").count() == 0, flash  # gone from the unresolved list
    shot(page, "c2-alerts-after-resolve")
    ((status, by, movement),) = live.query(
        "SELECT status, resolved_by, resolution_movement_id FROM alerts WHERE id = ?", (alert_id,)
    )
    assert (status, by) == ("resolved", "web:mia")
    posted = live.query("SELECT sku, location, qty, reason, actor FROM movements WHERE id = ?", (movement,))
    assert posted == [("BEER", "lane:B3", -1, "damage", "web:mia")]  # the write-off the outcome implies
    # the others stay (those the hub's reconciler has not closed by itself meanwhile)
    others = unresolved & {i for (i,) in live.query("SELECT id FROM alerts WHERE status != 'resolved'")}
    assert others and all(page.locator(f"#alert-{other}").count() == 1 for other in others)
    page.context.close()
    # a viewer sees the alerts but no form to resolve them
    viewer = sign_in(browser, live, "vera", "/alerts")
    assert viewer.locator(f"#alert-{min(others)}").count() == 1
    assert viewer.locator("form.resolve").count() == 0
    viewer.context.close()


# ----------------------------------------------------------------------------------------------------- (d)


def test_manager_filters_the_ledger_and_exports_it_as_csv(browser: Browser, live: LiveHub, tmp_path: Path) -> None:
    page = sign_in(browser, live, "mia", "/ledger")
    page.fill("form.filters input[name=sku]", "COLA")
    page.check("form.filters input[name=reason][value=sale]")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert "sku=COLA" in page.url and "reason=sale" in page.url, page.url
    shot(page, "d1-ledger-filtered")
    export = page.locator("a#export-csv")
    href = export.get_attribute("href") or ""
    assert href.startswith("/ledger.csv?") and "sku=COLA" in href and "reason=sale" in href, href
    with page.expect_download() as info:
        export.click()
    download = info.value
    assert download.suggested_filename.endswith(".csv"), download.suggested_filename
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
    expected = live.query("SELECT id, qty FROM movements WHERE sku = 'COLA' AND reason = 'sale' ORDER BY id")
    assert len(expected) == 6
    assert sorted((int(r["id"]), int(r["qty"])) for r in rows) == expected
    assert {(r["sku"], r["reason"]) for r in rows} == {("COLA", "sale")}
    page.context.close()


# ----------------------------------------------------------------------------------------------------- (e)


def test_overview_fits_a_phone_without_horizontal_scrolling(browser: Browser, live: LiveHub) -> None:
    page = sign_in(browser, live, "vera", "/", viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    shot(page, "e1-overview-phone")
    # a mobile browser widens the layout viewport (zooms out) when the page is wider than the screen
    widths = page.evaluate(
        "({inner: window.innerWidth, doc: document.documentElement.scrollWidth, body: document.body.scrollWidth})"
    )
    assert widths == {"inner": PHONE["width"], "doc": PHONE["width"], "body": PHONE["width"]}, widths
    # nothing sticks out of the screen, and nothing needs scrolling sideways inside a scroll box either
    beyond = page.evaluate(
        """() => [...document.querySelectorAll('body *')].filter(e => {
            const r = e.getBoundingClientRect(), s = getComputedStyle(e);
            const scrolls = ['auto', 'scroll'].includes(s.overflowX) && e.scrollWidth > e.clientWidth + 1;
            return r.width > 0 && (r.right > window.innerWidth + 1 || r.left < -1 || scrolls);
        }).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '')
                  + ' ' + Math.round(e.getBoundingClientRect().right) + 'px')"""
    )
    assert beyond == [], f"wider than the {PHONE['width']} px screen: {beyond[:8]}"
    assert set(counts_on_page(page)) == {lane for _, _, lane, _, _ in LANES}
    page.context.close()


@pytest.mark.parametrize(
    "path",
    [
        "/alerts",
        "/lanes/A1?range=24h",
        "/ledger",
        "/reorder",
        "/reports",
        "/nodes",
        "/users",
        "/api-clients",
        "/alerts?status=all",
    ],
)
def test_every_page_fits_a_phone(browser: Browser, live: LiveHub, path: str) -> None:
    """The page never widens the phone's layout viewport (the browser would zoom out); a table wider than the
    screen scrolls sideways inside its own box, the page does not."""
    page = sign_in(browser, live, "ada", path, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    shot(page, "e2-phone" + path.replace("/", "-").replace("?", "-").replace("=", "-"))
    widths = page.evaluate("({inner: window.innerWidth, doc: document.documentElement.scrollWidth})")
    assert widths == {"inner": PHONE["width"], "doc": PHONE["width"]}, widths
    loose = page.evaluate(
        """() => [...document.querySelectorAll('body *')].filter(e => {
            const r = e.getBoundingClientRect();
            if (r.width === 0 || (r.right <= window.innerWidth + 1 && r.left >= -1)) return false;
            for (let a = e.parentElement; a; a = a.parentElement) {
                if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) return false;
            }
            return true;
        }).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ' '
                  + Math.round(e.getBoundingClientRect().right))"""
    )
    assert loose == [], f"sticks out of the {PHONE['width']} px screen outside a scroll box: {loose[:8]}"
    page.context.close()


# ----------------------------------------------------------------------------------------------------- (f)

POLICY_PAGES = [
    "/",
    "/alerts",
    "/alerts?status=all",
    "/lanes/A1?range=24h",
    "/tags",
    "/tags?epc=3074",
    "/ledger",
    "/reorder",
    "/reports",
    "/nodes",
    "/users",
    "/api-clients",
    "/audit",
]


def styled(page: Page) -> dict[str, Any]:
    """The page's stylesheets (each loaded, with its rules), what is inline, and base.css's header colour."""
    result: dict[str, Any] = page.evaluate(
        """() => ({
            sheets: document.querySelectorAll('link[rel=stylesheet]').length,
            loaded: [...document.styleSheets].filter(s => s.href && s.cssRules.length > 0).length,
            inline: document.querySelectorAll('style, script:not([src]), [style]').length,
            header: getComputedStyle(document.querySelector('header')).backgroundColor,
        })"""
    )
    return result


def test_every_page_runs_under_its_content_security_policy(browser: Browser, live: LiveHub) -> None:
    """Each page with its policy on: its stylesheets load, the overview's script keeps the page live (the event
    stream opens, a pick shows, the filter works), sign-out posts; nothing is refused, no script error."""
    watch: list[str] = []
    page = sign_in(browser, live, "ada", "/", watch=watch)
    assert page.locator("#live.on").inner_text() == "live"  # the stream is open (waits for it)
    before = live.counts()["A2"]
    live.pick("A2")
    page.wait_for_selector(f'#lane-A2 td.count[data-count="{before - 1}"]', timeout=LIVE_UPDATE_S * 1000 + 500)
    page.fill("#filter-q", "a2")
    shown = page.eval_on_selector_all("tr[id^=lane-]:not([hidden])", "rows => rows.map(r => r.id)")
    assert shown == ["lane-A2"], shown
    shot(page, "f1-overview-under-the-policy")
    for path in POLICY_PAGES:
        response = page.goto(live.url + path)
        assert response is not None and response.status == 200, path
        assert response.headers.get("content-security-policy") == PAGE_CSP, (path, response.headers)
        assert response.headers.get("x-frame-options") == "DENY", path
        looks = styled(page)
        assert looks["sheets"] >= 1, (path, looks)
        assert looks == {**looks, "loaded": looks["sheets"], "inline": 0, "header": "rgb(34, 51, 68)"}, (path, looks)
        assert csp_problems(watch) == [], (path, watch)
    with page.expect_navigation() as signed_out:
        page.click("header form button[type=submit]")
    login = signed_out.value
    assert login is not None and "/login" in page.url
    assert login.headers.get("content-security-policy") == PAGE_CSP
    assert styled(page)["loaded"] == 1
    assert csp_problems(watch) == [], watch
    assert watch == [], watch  # no console error, no script error either
    page.context.close()


def hub_ledger(live: LiveHub) -> Any:
    assert live.hub is not None and live.hub.ledger is not None
    return live.hub.ledger
