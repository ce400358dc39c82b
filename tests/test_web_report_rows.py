"""The report page's long tables, built in Python (``reports.table_rows``), byte for byte what the template's loops
wrote before (kept here): every kind of cell, None figures, markup characters in keys and names; and the report's
CSV (``reports.report_csv``), byte for byte what ``csv.writer`` wrote of the rows before (kept here too): quotes,
commas and line breaks in text cells, cells a spreadsheet would take for a formula, None figures."""

from __future__ import annotations

import csv
import io
import math
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def _plain(text: str = "Z9") -> reports.Report:
    """A report of plain SKUs, lane ids and names (the rows' fast path) but for one ``text``, as a SKU, a lane id
    and a name at once."""
    by_sku = [ShrinkLine("COLA", "COLA", 10, 1), ShrinkLine(text, text, 4, 0), ShrinkLine("T", "T", 0, 2)]
    by_lane = [ShrinkLine("A1", "COLA", 7, 1), ShrinkLine(text, text, 3, 0), ShrinkLine("C3", None, 0, 0)]
    outages = [LaneOutage("A1", "COLA", 61_000, 0, True), LaneOutage(text, text, 0, 2, False)]
    flows = [SkuFlow("COLA", "Cola", 10, 5, 7), SkuFlow(text, text, 4, -1, 30), SkuFlow("T", "Tea 330", 0, 3, 90)]
    shrink = ShrinkReport(by_sku, by_lane, ShrinkLine("", None, 0, 2), ShrinkLine("", None, 14, 3))
    return reports.Report(metrics.period(30, 1_700_000_000_000), shrink, flows, outages)


# one text that needs care among plain ones: markup, CSV quoting, a formula's first character, the search's separator
TRICKY = ("Z9", "a&b", "<", "q'", 'q"', "a,b", "a\nb", "a\rb", "=1", "+1", "-1", "@x", "\tx", "\rx", "a\x1fb", "\x1f=")


@pytest.mark.parametrize("report", [_report(), *(_plain(t) for t in TRICKY)], ids=["odd", *map(repr, TRICKY)])
def test_table_rows_are_what_the_template_wrote(tmp_path: Path, report: reports.Report) -> None:
    app = create_app(tmp_path / "l.db", None, config={"TESTING": True})
    rows = reports.table_rows(report)
    with app.test_request_context("/reports"):
        for name, loop in OLD_LOOPS.items():
            old = app.jinja_env.from_string(PCT + loop).render(
                report=report, outages={o.lane_id: o for o in report.outages}
            )
            assert str(rows[name]) == old, name
    assert "(out now)" in str(rows["by_lane"])


def test_markup_in_a_report_is_escaped() -> None:
    rows = reports.table_rows(_report())
    assert "&lt;&amp;&gt;" in str(rows["by_lane"])
    assert "<td>a&amp;b</td>" in str(reports.table_rows(_plain("a&b"))["by_sku"])
    assert "<td>Z9</td>" in str(reports.table_rows(_plain())["by_sku"])


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


@pytest.mark.parametrize("report", [_report(), *(_plain(t) for t in TRICKY)], ids=["odd", *map(repr, TRICKY)])
def test_report_csv_is_what_the_csv_writer_wrote(report: reports.Report) -> None:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(reports.CSV_HEADER)
    out.writerows(old_report_rows(report))
    assert reports.report_csv(report) == buf.getvalue()


def test_report_csv_cells_read_back_whole() -> None:
    report = _report()
    rows = list(csv.reader(io.StringIO(reports.report_csv(report), newline="")))
    assert len(rows) == 1 + 5 + 6 + 2 and {len(r) for r in rows} == {len(reports.CSV_HEADER)}
    assert rows[1 + 5 + 5][:3] == ["lane", "'=1,2", 'B\r\n"x",']  # read back whole


def test_rounded_is_the_text_of_round() -> None:
    """``reports.rounded(v, n)`` is ``str(round(v, n))`` (what the CSV wrote): ties, signs, zeros, every magnitude,
    the threshold where it hands over to ``round``, random doubles of every kind."""
    rng = random.Random(13)
    values = [0.0, -0.0, 0.005, 0.015, 0.025, 0.05, 0.125, 0.375, 1.005, 2.675, -0.001, -0.05, -2.5, 99.995]
    values += [1e12, 9_999_999_999_999.99, 1e13, -1e13, 1e16, 123_456_789_012.345, 2.0**52, 1e300]
    values += [rng.randint(-(10**6), 10**6) / rng.choice((3, 7, 30, 90, 60_000, 1000)) for _ in range(20_000)]
    values += [10 ** rng.uniform(-6, 15.5) * rng.choice((1, -1)) for _ in range(20_000)]
    values += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20_000)]
    values += [math.inf, -math.inf, math.nan]
    for value in values:
        for places in (1, 2):
            assert reports.rounded(value, places) == str(round(value, places)), (value, places)
    assert (reports.rounded(2.5, 2), reports.rounded(0.001, 2), reports.rounded(-0.001, 1)) == ("2.5", "0.0", "-0.0")
