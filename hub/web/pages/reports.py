"""Reports: reorder, shrink rate as % of sales, sell-through, days of cover, out-of-stock minutes.

The figures come from ``hub.web.metrics`` (pure functions over the read-only connection); this module parses the
period, renders them as a page and as CSV.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Blueprint, Response, abort, render_template, request
from markupsafe import Markup

from hub.ledger.models import now_ms
from hub.web.access import requires
from hub.web.db import get_db, read_transaction
from hub.web.filters import csv_download, csv_text, iso_ms
from hub.web.inputs import BadInput, int_value
from hub.web.pages import metrics, reorder_queries

bp = Blueprint("reports", __name__)

CSV_HEADER = (
    "section",
    "sku",
    "lane",
    "sold_units",
    "shrink_units",
    "shrink_pct",
    "on_hand_end",
    "sell_through_pct",
    "units_per_day",
    "days_of_cover",
    "out_of_stock_minutes",
    "period_start_utc",
    "period_end_utc",
)


@dataclass(frozen=True, slots=True)
class Report:
    period: metrics.Period
    shrink: metrics.ShrinkReport
    flows: list[metrics.SkuFlow]
    outages: list[metrics.LaneOutage]


def parse_days(args: Mapping[str, str]) -> int:
    """The ``days`` parameter: one of ``PERIOD_DAYS`` (default ``DEFAULT_DAYS``), else 400."""
    allowed = ", ".join(str(d) for d in metrics.PERIOD_DAYS)
    try:
        days = int_value(args, "days", 1, max(metrics.PERIOD_DAYS))
    except BadInput as exc:
        abort(400, f"{exc}; choose one of {allowed}")
    if days is None:
        return metrics.DEFAULT_DAYS
    if days not in metrics.PERIOD_DAYS:
        abort(400, f"days: {days} is not a report period; choose one of {allowed}")
    return days


def build_report(days: int, now: int) -> Report:
    with read_transaction(get_db()) as conn:  # every figure sees one committed state
        p = metrics.period(days, now)
        sold = metrics.split_sales(metrics.sales(conn, p))  # once for both tables
        return Report(
            p, metrics.shrink_report(conn, p, sold), metrics.sku_flows(conn, p, sold), metrics.lane_outages(conn, p)
        )


def pct_text(value: float | None) -> str:
    """A share as the page shows it (a function: the page calls it for thousands of cells, a macro costs far more)."""
    return "no sales" if value is None else f"{value:.2f} %"


_MARKUP = re.compile(r"[&<>\"']").search
_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def html_text(text: str) -> str:
    """``markupsafe.escape(text)`` as a plain str, at a fraction of its cost per cell: the few texts that hold a
    markup character (a SKU is any printable ASCII) translated, the rest as they are."""
    return text.translate(_ENTITIES) if _MARKUP(text) else text


def _texts(report: Report) -> list[str]:
    """Every text from the ledger a report's rows show (keys, SKUs, names; None and empty ones left out), read a
    column of lines at a time."""
    shrink = report.shrink
    texts: list[str] = []
    for lines in (shrink.by_sku, shrink.by_lane, report.flows):
        for column in list(zip(*lines, strict=True))[:2]:  # key and SKU, or SKU and name
            texts.extend(filter(None, column))
    return texts


def _escaped(texts: list[str]) -> dict[str | None, str]:
    """The texts that ``html_text`` changes, escaped, each once (a cell is ``escaped.get(text, text)``): one search
    of all of them together finds none in a report of plain SKUs and lane ids."""
    if not _MARKUP("".join(texts)):
        return {}
    return {t: html_text(t) for t in set(texts)}


def table_rows(report: Report) -> dict[str, Markup]:
    """The report's three long tables' rows (by SKU, by lane, flows), as the template wrote them cell by cell
    (``tests/test_web_report_rows.py`` compares them byte for byte): built here, a few thousand rows cost a fraction.
    Every text from the ledger is escaped (``html_text``, through ``_escaped``); the figures are numbers, formatted
    as ``pct_text`` and the lines' properties give them (``metrics.pct``, ``sell_through``, ``days_of_cover``),
    computed here from the lines' fields (the rate of a line with no shrink, most lines, without a division): a call
    per cell costs more than the cell."""
    esc = _escaped(_texts(report)).get
    by_sku = []
    for key, _sku, sold, lost in report.shrink.by_sku:
        rate = "no sales" if sold <= 0 else "0.00 %" if not lost else f"{100 * lost / sold:.2f} %"
        by_sku.append(
            f'<tr><td>{esc(key, key)}</td><td class="num">{sold}</td><td class="num">{lost}</td>'
            f'<td class="num">{rate}</td></tr>\n'
        )
    outages = {o.lane_id: o for o in report.outages}
    lanes = []
    for key, sku, sold, lost in report.shrink.by_lane:
        o = outages.get(key)
        if o is None or o.out_ms is None:
            out = "no sensor data"
        else:
            out = f"{o.out_ms / 60_000:.1f} (out now)" if o.out_now else f"{o.out_ms / 60_000:.1f}"
        key = esc(key, key)
        rate = "no sales" if sold <= 0 else "0.00 %" if not lost else f"{100 * lost / sold:.2f} %"
        lanes.append(
            f'<tr id="lane-{key}"><td>{key}</td><td>{esc(sku, sku) or "-"}</td><td class="num">{sold}</td>'
            f'<td class="num">{lost}</td><td class="num">{rate}</td>\n<td class="num">{out}</td></tr>\n'
        )
    flows = []
    for sku, name, sold, on_hand, days in report.flows:
        stock = max(on_hand, 0)
        per_day = sold / days
        through = "-" if sold + stock <= 0 else f"{100 * sold / (sold + stock):.1f} %"
        cover = "no sales" if per_day <= 0 else f"{stock / per_day:.1f}"
        sku = esc(sku, sku)
        flows.append(
            f'<tr id="flow-{sku}"><td>{sku}<br><small>{esc(name, name)}</small></td><td class="num">{sold}</td>'
            f'<td class="num">{on_hand}</td>\n<td class="num">{through}</td>\n<td class="num">{per_day:.2f}</td>\n'
            f'<td class="num">{cover}</td></tr>\n'
        )
    return {"by_sku": Markup("".join(by_sku)), "by_lane": Markup("".join(lanes)), "flows": Markup("".join(flows))}


_CSV_QUOTED = re.compile(r'[",\r\n]').search
# a text that starts with a formula's first character, in the texts searched together, each after a \x1f (a \x1f in
# a text only makes the search say so of a text that does not: ``_csv_cells`` then looks at each)
_CSV_FORMULA = re.compile(r"\x1f[=+\-@\t\r]").search


def _csv_cell(value: str | None) -> str:
    """A text cell as ``csv.writer`` writes it (in quotes, its quotes doubled, when it holds a quote, a comma or a
    line break), made safe for a spreadsheet first (``csv_text``)."""
    text = csv_text(value)
    return '"' + text.replace('"', '""') + '"' if _CSV_QUOTED(text) else text


def _csv_cells(texts: list[str]) -> dict[str | None, str]:
    """The text cells that ``_csv_cell`` changes, each once (a cell is ``cells.get(text, text)``): None, and in a
    report of plain SKUs and lane ids nothing else (two searches of all the texts together)."""
    joined = "\x1f" + "\x1f".join(texts)
    if not _CSV_QUOTED(joined) and not _CSV_FORMULA(joined):
        return {None: "", "": ""}
    return {t: _csv_cell(t) for t in {None, "", *texts}}


def rounded(value: float, places: int) -> str:
    """``str(round(value, places))`` at a fraction of its cost (a report's CSV writes thousands): ``round`` keeps the
    digits ``f"{value:.{places}f}"`` writes (both round the float's exact value correctly), and the shortest text of
    the float those digits make is the digits without trailing zeros (one kept after the point) as long as two such
    numbers are farther apart than the floats near them: below 1e13. Beyond (or not finite), ``round`` itself."""
    if not -1e13 < value < 1e13:
        return str(round(value, places))
    text = f"{value:.{places}f}".rstrip("0")
    return text + "0" if text[-1] == "." else text


def _num(value: float | None, places: int = 2) -> str:
    return "" if value is None else rounded(value, places)


def report_csv(report: Report) -> str:
    """The report as CSV: a row per SKU, per lane, "no lane" and the store, CRLF line ends, byte for byte what
    ``csv.writer`` wrote of those rows (``tests/test_web_report_rows.py`` compares them): each row one f-string
    of its cells (the text cells quoted as needed, ``_csv_cells``; the figures as ``_num`` writes the lines'
    properties, computed here from their fields, the rate of a line with no shrink without a division), a fraction
    of a writer's cost per cell."""
    period = f"{iso_ms(report.period.start_ms)},{iso_ms(report.period.end_ms)}\r\n"
    lines = [",".join(CSV_HEADER) + "\r\n"]
    shrink = report.shrink
    cell = _csv_cells(_texts(report)).get
    flows = {f.sku: f for f in report.flows}
    for _key, sku, sold, lost in shrink.by_sku:
        f = flows.get(sku or "")
        if f is None:
            flow = ",,,"
        else:
            stock = max(f.on_hand, 0)
            per_day = f.sold / f.days
            through = "" if f.sold + stock <= 0 else rounded(100 * f.sold / (f.sold + stock), 2)
            cover = "" if per_day <= 0 else rounded(stock / per_day, 2)
            flow = f"{f.on_hand},{through},{rounded(per_day, 2)},{cover}"
        rate = "" if sold <= 0 else "0.0" if not lost else rounded(100 * lost / sold, 2)
        lines.append(f"sku,{cell(sku, sku)},,{sold},{lost},{rate},{flow},,{period}")
    outages = {o.lane_id: o for o in report.outages}
    for key, sku, sold, lost in shrink.by_lane:
        o = outages.get(key)
        minutes = "" if o is None or o.out_ms is None else rounded(o.out_ms / 60_000, 1)
        rate = "" if sold <= 0 else "0.0" if not lost else rounded(100 * lost / sold, 2)
        lines.append(f"lane,{cell(sku, sku)},{cell(key, key)},{sold},{lost},{rate},,,,,{minutes},{period}")
    for name, total in (("no lane", shrink.unattributed), ("store", shrink.total)):
        lines.append(f"{name},,,{total.sold},{total.shrink},{_num(total.rate_pct)},,,,,,{period}")
    return "".join(lines)


@bp.get("/reorder")
@requires("viewer")
def reorder() -> str:
    with read_transaction(get_db()) as conn:
        lines = reorder_queries.reorder_lines(conn, now_ms())
    return render_template("reorder.html", lines=lines, velocity_days=reorder_queries.REORDER_VELOCITY_DAYS)


@bp.get("/reports")
@requires("manager")
def index() -> str:
    days = parse_days(request.args)
    report = build_report(days, now_ms())
    return render_template(
        "reports.html",
        report=report,
        days=days,
        choices=metrics.PERIOD_DAYS,
        industry=metrics.INDUSTRY_SHRINK_PCT,
        pct=pct_text,
        rows=table_rows(report),
    )


@bp.get("/reports.csv")
@requires("manager")
def export() -> Response:
    days = parse_days(request.args)
    now = now_ms()
    report = build_report(days, now)
    return csv_download(f"report-{days}d", iter((report_csv(report),)))
