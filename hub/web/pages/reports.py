"""Reports: reorder, shrink rate as % of sales, sell-through, days of cover, out-of-stock minutes.

The figures come from ``hub.web.metrics`` (pure functions over the read-only connection); this module parses the
period, renders them as a page and as CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, render_template, request
from markupsafe import Markup, escape

from hub.ledger.models import now_ms
from hub.web.access import requires
from hub.web.db import get_db, read_transaction
from hub.web.filters import csv_text, iso_ms
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
        sold = metrics.sales(conn, p)
        return Report(
            p, metrics.shrink_report(conn, p, sold), metrics.sku_flows(conn, p, sold), metrics.lane_outages(conn, p)
        )


def pct_text(value: float | None) -> str:
    """A share as the page shows it (a function: the page calls it for thousands of cells, a macro costs far more)."""
    return "no sales" if value is None else f"{value:.2f} %"


def table_rows(report: Report) -> dict[str, Markup]:
    """The report's three long tables' rows (by SKU, by lane, flows), as the template wrote them cell by cell
    (``tests/test_web_reports.py`` compares them byte for byte): built here, a few thousand rows cost a fraction."""
    outages = {o.lane_id: o for o in report.outages}
    by_sku = "".join(
        f'<tr><td>{escape(line.key)}</td><td class="num">{line.sold}</td><td class="num">{line.shrink}</td>'
        f'<td class="num">{escape(pct_text(line.rate_pct))}</td></tr>\n'
        for line in report.shrink.by_sku
    )
    lanes = []
    for line in report.shrink.by_lane:
        o = outages.get(line.key)
        if o is None or o.minutes is None:
            out = "no sensor data"
        else:
            out = f"{o.minutes:.1f}" + (" (out now)" if o.out_now else "")
        key = escape(line.key)
        lanes.append(
            f'<tr id="lane-{key}"><td>{key}</td><td>{escape(line.sku or "-")}</td><td class="num">{line.sold}</td>'
            f'<td class="num">{line.shrink}</td><td class="num">{escape(pct_text(line.rate_pct))}</td>\n'
            f'<td class="num">{out}</td></tr>\n'
        )
    flows = []
    for f in report.flows:
        through = "-" if f.sell_through_pct is None else f"{f.sell_through_pct:.1f} %"
        cover = "no sales" if f.days_of_cover is None else f"{f.days_of_cover:.1f}"
        sku = escape(f.sku)
        flows.append(
            f'<tr id="flow-{sku}"><td>{sku}<br><small>{escape(f.name)}</small></td><td class="num">{f.sold}</td>'
            f'<td class="num">{f.on_hand}</td>\n<td class="num">{through}</td>\n<td class="num">{f.per_day:.2f}</td>\n'
            f'<td class="num">{cover}</td></tr>\n'
        )
    return {"by_sku": Markup(by_sku), "by_lane": Markup("".join(lanes)), "flows": Markup("".join(flows))}


def _num(value: float | None, places: int = 2) -> Any:
    return "" if value is None else round(value, places)


def report_rows(report: Report) -> Iterator[list[Any]]:
    start, end = iso_ms(report.period.start_ms), iso_ms(report.period.end_ms)
    flows = {f.sku: f for f in report.flows}
    for line in report.shrink.by_sku:
        f = flows.get(line.sku or "")
        yield [
            "sku",
            csv_text(line.sku),
            "",
            line.sold,
            line.shrink,
            _num(line.rate_pct),
            "" if f is None else f.on_hand,
            "" if f is None else _num(f.sell_through_pct),
            "" if f is None else _num(f.per_day),
            "" if f is None else _num(f.days_of_cover),
            "",
            start,
            end,
        ]
    outages = {o.lane_id: o for o in report.outages}
    for line in report.shrink.by_lane:
        o = outages.get(line.key)
        minutes = None if o is None else o.minutes
        yield (
            ["lane", csv_text(line.sku), csv_text(line.key), line.sold, line.shrink, _num(line.rate_pct)]
            + [""] * 4
            + [
                _num(minutes, 1),
                start,
                end,
            ]
        )
    u = report.shrink.unattributed
    yield ["no lane", "", "", u.sold, u.shrink, _num(u.rate_pct)] + [""] * 5 + [start, end]
    t = report.shrink.total
    yield ["store", "", "", t.sold, t.shrink, _num(t.rate_pct)] + [""] * 5 + [start, end]


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
        outages={o.lane_id: o for o in report.outages},
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
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(CSV_HEADER)
    out.writerows(report_rows(report))
    stamp = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        buf.getvalue(),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="report-{days}d-{stamp}.csv"',
            "X-Content-Type-Options": "nosniff",
        },
    )
