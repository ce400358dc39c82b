"""The report page's long tables, built in Python (``reports.table_rows``), byte for byte what the template's loops
wrote before (kept here): every kind of cell, None figures, markup characters in keys and names; and the report's
CSV (``reports.report_csv``), byte for byte what ``csv.writer`` wrote of the rows before (kept here too): quotes,
commas and line breaks in text cells, cells a spreadsheet would take for a formula, None figures."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hub.web import create_app
from hub.web.filters import csv_text, iso_ms
from hub.web.pages import metrics, reports
from hub.web.pages.metrics import LaneOutage, ShrinkLine, ShrinkReport, SkuFlow

PCT = '{% macro pct(v) %}{% if v is none %}no sales{% else %}{{ "%.2f" % v }} %{% endif %}{% endmacro %}'
OLD_LOOPS = {
    "by_sku": (
        '{% for l in report.shrink.by_sku %}<tr><td>{{ l.key }}</td><td class="num">{{ l.sold }}</t'
        'd><td class="num">{{ l.shrink }}</td><td class="num">{{ pct(l.rate_pct) }}</td></tr>\n{% en'
        "dfor %}"
    ),
    "by_lane": (
        '{% for l in report.shrink.by_lane %}{% set o = outages.get(l.key) %}<tr id="lane-{{ l.key '
        '}}"><td>{{ l.key }}</td><td>{{ l.sku or "-" }}</td><td class="num">{{ l.sold }}</td><td cl'
        'ass="num">{{ l.shrink }}</td><td class="num">{{ pct(l.rate_pct) }}</td>\n<td class="num">{%'
        ' if o is none or o.minutes is none %}no sensor data{% else %}{{ "%.1f" % o.minutes }}{% if'
        " o.out_now %} (out now){% endif %}{% endif %}</td></tr>\n{% endfor %}"
    ),
    "flows": (
        '{% for f in report.flows %}<tr id="flow-{{ f.sku }}"><td>{{ f.sku }}<br><small>{{ f.name }'
        '}</small></td><td class="num">{{ f.sold }}</td><td class="num">{{ f.on_hand }}</td>\n<td cl'
        'ass="num">{% if f.sell_through_pct is none %}-{% else %}{{ "%.1f" % f.sell_through_pct }} '
        '%{% endif %}</td>\n<td class="num">{{ "%.2f" % f.per_day }}</td>\n<td class="num">{% if f.da'
        'ys_of_cover is none %}no sales{% else %}{{ "%.1f" % f.days_of_cover }}{% endif %}</td></tr'
        ">\n{% endfor %}"
    ),
}


def _report() -> reports.Report:
    odd = "A<&>\"'1"
    comma = "=1,2"  # a comma, and a formula to a spreadsheet
    broken = 'B\r\n"x",'  # not a lane id the ledger gives, but a key of the report all the same
    by_sku = [
        ShrinkLine("COLA", "COLA", 10, 1),
        ShrinkLine(odd, odd, 0, 0),
        ShrinkLine("T", "T", 3, 5),
        ShrinkLine(comma, comma, 3, 1),
        ShrinkLine("-5", "-5", 1, 0),  # on no flow line
    ]
    by_lane = [
        ShrinkLine("A1", "COLA", 7, 1),
        ShrinkLine(odd, None, 0, 2),
        ShrinkLine("B2", "", 1, 0),
        ShrinkLine("C3", "T", 2, 0),
        ShrinkLine("D4", "T", 2, 0),
        ShrinkLine(broken, comma, 9, 3),
    ]
    outages = [
        LaneOutage("A1", "COLA", 90_061, 0, True),
        LaneOutage(odd, None, None, 0, False),
        LaneOutage("B2", "", 60_000 * 30, 4, False),
        LaneOutage("D4", "T", 0, 3, False),
        LaneOutage(broken, comma, 1, 0, True),
    ]  # C3: none at all
    flows = [
        SkuFlow("COLA", "Cola <330 ml> & co", 10, 5, 30),
        SkuFlow(odd, odd, 0, 0, 7),
        SkuFlow("T", "Tea", 3, -4, 90),
        SkuFlow("Z", "Zed", 7, 1_000_000, 1),
        SkuFlow(comma, "1, 2 & 3", 3, 7, 30),
    ]
    shrink = ShrinkReport(by_sku, by_lane, ShrinkLine("", None, 1, 1), ShrinkLine("", None, 13, 6))
    return reports.Report(metrics.period(7, 1_700_000_000_000), shrink, flows, outages)


def test_table_rows_are_what_the_template_wrote(tmp_path: Path) -> None:
    app = create_app(tmp_path / "l.db", None, config={"TESTING": True})
    report = _report()
    rows = reports.table_rows(report)
    with app.test_request_context("/reports"):
        for name, loop in OLD_LOOPS.items():
            old = app.jinja_env.from_string(PCT + loop).render(
                report=report, outages={o.lane_id: o for o in report.outages}
            )
            assert str(rows[name]) == old, name
    assert "&lt;&amp;&gt;" in str(rows["by_lane"]) and "(out now)" in str(rows["by_lane"])


def _num(value: float | None, places: int = 2) -> Any:
    return "" if value is None else round(value, places)


def old_report_rows(report: reports.Report) -> Iterator[list[Any]]:
    """The CSV's rows as ``reports.report_rows`` made them for ``csv.writer`` before ``report_csv``."""
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
            + [_num(minutes, 1), start, end]
        )
    u = report.shrink.unattributed
    yield ["no lane", "", "", u.sold, u.shrink, _num(u.rate_pct)] + [""] * 5 + [start, end]
    t = report.shrink.total
    yield ["store", "", "", t.sold, t.shrink, _num(t.rate_pct)] + [""] * 5 + [start, end]


def test_report_csv_is_what_the_csv_writer_wrote() -> None:
    report = _report()
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(reports.CSV_HEADER)
    out.writerows(old_report_rows(report))
    assert reports.report_csv(report) == buf.getvalue()
    rows = list(csv.reader(io.StringIO(reports.report_csv(report), newline="")))
    assert len(rows) == 1 + 5 + 6 + 2 and {len(r) for r in rows} == {len(reports.CSV_HEADER)}
    assert rows[1 + 5 + 5][:3] == ["lane", "'=1,2", 'B\r\n"x",']  # read back whole
