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


def table_rows(report: Report) -> dict[str, Markup]:
    """The report's three long tables' rows (by SKU, by lane, flows), as the template wrote them cell by cell
    (``tests/test_web_report_rows.py`` compares them byte for byte): built here, a few thousand rows cost a fraction.
    Every text from the ledger goes through ``html_text``; the figures are numbers or ``pct_text``."""
    outages = {o.lane_id: o for o in report.outages}
    by_sku = [
        f'<tr><td>{html_text(line.key)}</td><td class="num">{line.sold}</td><td class="num">{line.shrink}</td>'
        f'<td class="num">{pct_text(line.rate_pct)}</td></tr>\n'
        for line in report.shrink.by_sku
    ]
    lanes = []
    for line in report.shrink.by_lane:
        o = outages.get(line.key)
        minutes = None if o is None else o.minutes
        if minutes is None:
            out = "no sensor data"
        else:
            out = f"{minutes:.1f} (out now)" if o is not None and o.out_now else f"{minutes:.1f}"
        key = html_text(line.key)
        lanes.append(
            f'<tr id="lane-{key}"><td>{key}</td><td>{html_text(line.sku or "-")}</td><td class="num">{line.sold}</td>'
            f'<td class="num">{line.shrink}</td><td class="num">{pct_text(line.rate_pct)}</td>\n'
            f'<td class="num">{out}</td></tr>\n'
        )
    flows = []
    for f in report.flows:
        through, cover = f.sell_through_pct, f.days_of_cover
        sku = html_text(f.sku)
        flows.append(
            f'<tr id="flow-{sku}"><td>{sku}<br><small>{html_text(f.name)}</small></td><td class="num">{f.sold}</td>'
            f'<td class="num">{f.on_hand}</td>\n<td class="num">{"-" if through is None else f"{through:.1f} %"}</td>\n'
            f'<td class="num">{f.per_day:.2f}</td>\n<td class="num">{"no sales" if cover is None else f"{cover:.1f}"}'
            "</td></tr>\n"
        )
    return {"by_sku": Markup("".join(by_sku)), "by_lane": Markup("".join(lanes)), "flows": Markup("".join(flows))}


_CSV_QUOTED = re.compile(r'[",\r\n]').search


def _csv_cell(value: str | None) -> str:
    """A text cell as ``csv.writer`` writes it (in quotes, its quotes doubled, when it holds a quote, a comma or a
    line break), made safe for a spreadsheet first (``csv_text``)."""
    text = csv_text(value)
    return '"' + text.replace('"', '""') + '"' if _CSV_QUOTED(text) else text


def _num(value: float | None, places: int = 2) -> str:
    return "" if value is None else str(round(value, places))


def report_csv(report: Report) -> str:
    """The report as CSV: a row per SKU, per lane, "no lane" and the store, CRLF line ends, byte for byte what
    ``csv.writer`` wrote of those rows (``tests/test_web_report_rows.py`` compares them): each row one f-string
    of its cells (the text cells quoted as needed, the figures numbers), a fraction of a writer's cost per cell."""
    period = f"{iso_ms(report.period.start_ms)},{iso_ms(report.period.end_ms)}\r\n"
    lines = [",".join(CSV_HEADER) + "\r\n"]
    flows = {f.sku: f for f in report.flows}
    for line in report.shrink.by_sku:
        f = flows.get(line.sku or "")
        flow = (
            ",,," if f is None else f"{f.on_hand},{_num(f.sell_through_pct)},{_num(f.per_day)},{_num(f.days_of_cover)}"
        )
        lines.append(f"sku,{_csv_cell(line.sku)},,{line.sold},{line.shrink},{_num(line.rate_pct)},{flow},,{period}")
    outages = {o.lane_id: o for o in report.outages}
    for line in report.shrink.by_lane:
        o = outages.get(line.key)
        minutes = _num(None if o is None else o.minutes, 1)
        lines.append(
            f"lane,{_csv_cell(line.sku)},{_csv_cell(line.key)},{line.sold},{line.shrink},{_num(line.rate_pct)},,,,,"
            f"{minutes},{period}"
        )
    for name, total in (("no lane", report.shrink.unattributed), ("store", report.shrink.total)):
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
