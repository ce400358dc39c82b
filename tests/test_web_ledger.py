"""The ledger explorer and its CSV export (hub/web/pages/ledger.py, ledger_queries.py): every filter against the
same filter written independently in Python over all movements, keyset pagination, 400s naming the parameter, the
streamed CSV."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from werkzeug.datastructures import MultiDict

from hub.ledger import LedgerService, Reason
from hub.web.pages import ledger as explorer
from hub.web.pages import ledger_queries
from tests.web_support import Env, run_env

T0 = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
H = 3_600_000
D = 24 * H


async def _postings(ledger: LedgerService) -> None:
    async def many(tx: Any) -> None:
        for i in range(130):  # 130 sales over three days, two tills
            await tx.sale("COLA", 1 + i % 3, ts=T0 + i * 33 * 60_000, actor=f"pos-{1 + i % 2}", ref=f"T-{i}")

    await ledger.transact(many)
    await ledger.record_receipt("TEA", 24, actor="clerk-bob", ref="PO-7", ts=T0 + D + 5 * H)
    await ledger.restock("TEA", "B1", 10, actor="clerk-bob", ref="R-1", ts=T0 + D + 6 * H)
    await ledger.write_off(
        "COLA", 2, Reason.SHRINKAGE, actor="@evil", ref="W-1", location="lane:A1", ts=T0 + 2 * D, note="=1+1"
    )
    await ledger.write_off("SOUP", 1, Reason.DAMAGE, actor="-x", ref="+W-2", ts=T0 - D, note="\tcmd")
    await ledger.reverse(_movement_id(ledger, "sale:T-5"), actor="web:alice", why="keyed twice")


def _movement_id(ledger: LedgerService, ref: str) -> int:
    conn = sqlite3.connect(ledger.path)
    try:
        return int(conn.execute("SELECT id FROM movements WHERE source_ref = ?", (ref,)).fetchone()[0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    for e in run_env(tmp_path_factory.mktemp("ledger")):
        e.write(_postings)
        yield e


Row = tuple[int, int, str | None, str, int, str, str, str, str | None, int | None]


def _all(env: Env) -> list[Row]:
    conn = sqlite3.connect(env.db)
    try:
        return list(
            conn.execute(
                "SELECT id, ts_ms, sku, location, qty, reason, actor, source_ref, note, reverses_id FROM movements"
                " ORDER BY id DESC"
            )
        )
    finally:
        conn.close()


def _day(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp() * 1000)


def _expected(env: Env, args: dict[str, Any]) -> list[int]:
    """The same filters, written independently over every row."""
    keep: list[Callable[[Row], bool]] = []
    if "sku" in args:
        keep.append(lambda r: r[2] == args["sku"])
    if "lane" in args:
        keep.append(lambda r: r[3] in (f"sensor:{args['lane']}", f"lane:{args['lane']}"))
    if "location" in args:
        keep.append(lambda r: r[3] == args["location"])
    if "reason" in args:
        keep.append(lambda r: r[5] in args["reason"])
    if "actor" in args:
        keep.append(lambda r: r[6].startswith(args["actor"]))
    if "from" in args:
        keep.append(lambda r: r[1] >= _day(args["from"]))
    if "to" in args:
        keep.append(lambda r: r[1] < _day(args["to"]) + D)
    if "ref" in args:
        keep.append(lambda r: args["ref"] in r[7])
    return [r[0] for r in _all(env) if all(k(r) for k in keep)]


def _ids(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr id="m(\d+)">', html)]


CASES: list[dict[str, Any]] = [
    {},
    {"sku": "TEA"},
    {"lane": "A1"},
    {"lane": "B1"},  # the restock into lane:B1 and the seeded sensor gap at sensor:B1
    {"location": "backroom"},
    {"reason": ["shrinkage", "damage"]},
    {"reason": ["sensor_gap"]},
    {"actor": "pos-2"},
    {"actor": "clerk"},
    {"from": "2026-11-21", "to": "2026-11-21"},
    {"from": "2026-11-22"},
    {"to": "2026-11-20"},
    {"ref": "T-1"},
    {"sku": "COLA", "reason": ["sale"], "actor": "pos-1", "from": "2026-11-21", "ref": "T-"},
    {"sku": "NOPE"},
]


@pytest.mark.parametrize("args", CASES, ids=[str(c) for c in CASES])
def test_filters_and_pagination(env: Env, args: dict[str, Any]) -> None:
    expected = _expected(env, args)
    client = env.client("clerk")
    resp = client.get("/ledger", query_string=args)
    assert resp.status_code == 200
    seen: list[int] = []
    pages = 0
    while True:
        html = resp.get_data(as_text=True)
        ids = _ids(html)
        assert len(ids) <= ledger_queries.PAGE_SIZE
        seen += ids
        pages += 1
        if pages > 1:
            assert 'id="newest"' in html
        link = re.search(r'<a id="older" href="([^"]+)"', html)
        if link is None:
            break
        href = link.group(1).replace("&amp;", "&")
        query = parse_qsl(urlsplit(href).query)
        # the link keeps every filter
        assert sorted(k for k, _ in query if k != "before") == sorted(
            k for k, v in args.items() for _ in (v if isinstance(v, list) else [v])
        )
        resp = client.get(href)
    assert seen == expected
    assert pages == max(1, -(-len(expected) // ledger_queries.PAGE_SIZE))
    if not expected:
        assert "No movements match" in html


@pytest.mark.parametrize("sort_limit", [0, 3, 20_000])
def test_both_query_plans_give_the_same_pages(env: Env, monkeypatch: pytest.MonkeyPatch, sort_limit: int) -> None:
    """A short index range is read and sorted, a long one is not (the table is walked by id): same rows."""
    monkeypatch.setattr(ledger_queries, "SORT_LIMIT", sort_limit)
    conn = sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)
    try:
        for args in CASES:
            filters = explorer.parse_filters(MultiDict(args))
            expected = _expected(env, args)
            assert [r[0] for r in ledger_queries.page(conn, filters, None)] == expected[: ledger_queries.PAGE_SIZE + 1]
            for before in (expected[len(expected) // 2], expected[-1]) if expected else ():
                got = [r[0] for r in ledger_queries.page(conn, filters, before, 10)]
                assert got == [i for i in expected if i < before][:11]
    finally:
        conn.close()


def test_a_page_of_older_movements_and_the_newest_link(env: Env) -> None:
    everything = _expected(env, {})
    before = everything[40]
    html = env.client("clerk").get(f"/ledger?sku=COLA&before={before}").get_data(as_text=True)
    assert _ids(html) == [i for i in _expected(env, {"sku": "COLA"}) if i < before][: ledger_queries.PAGE_SIZE]
    assert '<a id="newest" href="/ledger?sku=COLA">' in html


def test_columns_and_reversal_links(env: Env) -> None:
    rows = {r[7]: r for r in _all(env)}
    sale, reversal = rows["sale:T-5"], rows[f"reversal:{rows['sale:T-5'][0]}"]
    html = env.client("clerk").get("/ledger?ref=T-5").get_data(as_text=True)
    tr = html.split(f'<tr id="m{sale[0]}">', 1)[1].split("</tr>", 1)[0]
    assert "2026-11-20 02:45:00 UTC" in tr  # T0 + 5 x 33 minutes
    assert "<td>COLA</td>" in tr and "<td>lane:A1</td>" in tr and "-3" in tr and "<td>sale</td>" in tr
    assert f'reversed by <a href="/ledger?before={reversal[0] + 1}#m{reversal[0]}">#{reversal[0]}</a>' in tr
    html = env.client("clerk").get("/ledger?actor=web:alice").get_data(as_text=True)
    tr = html.split(f'<tr id="m{reversal[0]}">', 1)[1].split("</tr>", 1)[0]
    assert "+3" in tr and "web:alice" in tr and "keyed twice" in tr
    assert f'reverses <a href="/ledger?before={sale[0] + 1}#m{sale[0]}">#{sale[0]}</a>' in tr


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("sku=" + "X" * 33, "sku"),
        ("sku=caf%C3%A9", "sku"),
        ("lane=../x", "lane"),
        ("reason=theft", "reason"),
        ("reason=sale&reason=bogus", "reason"),
        ("from=2026-13-01", "from"),
        ("to=27/11/2026", "to"),
        ("from=2026-11-22&to=2026-11-21", "from"),
        ("before=abc", "before"),
        ("before=0", "before"),
        ("before=-5", "before"),
        ("actor=a%0Ab", "actor"),
        ("ref=" + "r" * 201, "ref"),
        ("location=" + "l" * 201, "location"),
    ],
)
def test_invalid_filters_are_a_400_naming_the_parameter(env: Env, query: str, param: str) -> None:
    for url in ("/ledger", "/ledger.csv"):
        resp = env.client("manager").get(f"{url}?{query}")
        assert resp.status_code == 400, url
        assert f"{param}: " in resp.get_data(as_text=True)


def test_export_link_for_managers_only(env: Env) -> None:
    query = "sku=COLA&reason=sale&reason=shrinkage&actor=pos&from=2026-11-20&to=2026-11-21&ref=T-"
    expected = (
        '<a id="export-csv" href="/ledger.csv?sku=COLA&amp;reason=sale&amp;reason=shrinkage&amp;actor=pos'
        '&amp;from=2026-11-20&amp;to=2026-11-21&amp;ref=T-">'
    )
    for role in ("manager", "admin"):
        assert expected in env.client(role).get(f"/ledger?{query}").get_data(as_text=True)
    assert 'id="export-csv"' not in env.client("clerk").get(f"/ledger?{query}").get_data(as_text=True)
    assert '<a id="export-csv" href="/ledger.csv">' in env.client("manager").get("/ledger").get_data(as_text=True)


def _csv(env: Env, query: str) -> tuple[bool, list[list[str]], Any]:
    resp = env.client("manager").get(f"/ledger.csv?{query}", buffered=False)
    assert resp.status_code == 200
    streamed = resp.is_streamed
    return streamed, list(csv.reader(io.StringIO(resp.get_data(as_text=True), newline=""))), resp


@pytest.mark.parametrize("args", CASES, ids=[str(c) for c in CASES])
def test_csv_applies_the_filters(env: Env, args: dict[str, Any]) -> None:
    from urllib.parse import urlencode

    _streamed, rows, _resp = _csv(env, urlencode(args, doseq=True))
    assert rows[0] == list(explorer.CSV_HEADER)
    assert [int(r[0]) for r in rows[1:]] == _expected(env, args)


def test_csv_round_trips_and_is_formula_safe(env: Env) -> None:
    streamed, rows, resp = _csv(env, "")
    assert streamed and resp.mimetype == "text/csv"
    disposition = resp.headers["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="ledger-\d{8}T\d{6}Z\.csv"', disposition)
    assert disposition[29:37] == datetime.now(UTC).strftime("%Y%m%d")
    by_id = {r[0]: r for r in _all(env)}
    assert len(rows) == len(by_id) + 1
    header = rows[0]
    for line in rows[1:]:
        got = dict(zip(header, line, strict=True))
        r = by_id[int(got["id"])]
        assert datetime.fromisoformat(got["time_utc"].replace("Z", "+00:00")).timestamp() * 1000 == r[1]
        assert got["time_utc"].endswith("Z")
        assert int(got["qty"]) == r[4]  # numbers stay numbers, "-3" is not quoted
        assert got["reason"] == r[5] and got["sku"] == (r[2] or "")
        for column, value in (("actor", r[6]), ("source_ref", r[7]), ("note", r[8] or ""), ("location", r[3])):
            if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
                assert got[column] == "'" + value
            else:
                assert got[column] == value
    evil = next(dict(zip(header, line, strict=True)) for line in rows[1:] if line[6] == "'@evil")
    assert evil["note"] == "'=1+1" and evil["qty"] == "-2"
    damage = next(dict(zip(header, line, strict=True)) for line in rows[1:] if line[5] == "damage")
    assert (damage["actor"], damage["note"], damage["source_ref"]) == ("'-x", "'\tcmd", "writeoff:+W-2")
    reversal = next(dict(zip(header, line, strict=True)) for line in rows[1:] if line[9])
    assert by_id[int(reversal["reverses_id"])][7] == "sale:T-5"
    original = next(dict(zip(header, line, strict=True)) for line in rows[1:] if line[0] == reversal["reverses_id"])
    assert original["reversed_by"] == reversal["id"]


def test_csv_streams_in_batches(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explorer, "CSV_BATCH", 7)
    conn = sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)
    try:
        chunks = list(explorer.csv_lines(conn, ledger_queries.Filters(sku="COLA")))
    finally:
        conn.close()
    expected = _expected(env, {"sku": "COLA"})
    assert len(chunks) == 1 + -(-len(expected) // 7)  # header, then batches of 7 rows
    rows = list(csv.reader(io.StringIO("".join(chunks), newline="")))
    assert [int(r[0]) for r in rows[1:]] == expected


def test_csv_needs_a_manager(env: Env) -> None:
    assert env.client("clerk").get("/ledger.csv").status_code == 403
    assert env.client("viewer").get("/ledger").status_code == 403
