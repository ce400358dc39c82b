"""The report page's long tables, built in Python (``reports.table_rows``), byte for byte what the template's loops
wrote before (kept here): every kind of cell, None figures, markup characters in keys and names."""

from __future__ import annotations

from pathlib import Path

from hub.web import create_app
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
    by_sku = [ShrinkLine("COLA", "COLA", 10, 1), ShrinkLine(odd, odd, 0, 0), ShrinkLine("T", "T", 3, 5)]
    by_lane = [
        ShrinkLine("A1", "COLA", 7, 1),
        ShrinkLine(odd, None, 0, 2),
        ShrinkLine("B2", "", 1, 0),
        ShrinkLine("C3", "T", 2, 0),
        ShrinkLine("D4", "T", 2, 0),
    ]
    outages = [
        LaneOutage("A1", "COLA", 90_061, 0, True),
        LaneOutage(odd, None, None, 0, False),
        LaneOutage("B2", "", 60_000 * 30, 4, False),
        LaneOutage("D4", "T", 0, 3, False),
    ]  # C3: none at all
    flows = [
        SkuFlow("COLA", "Cola <330 ml> & co", 10, 5, 30),
        SkuFlow(odd, odd, 0, 0, 7),
        SkuFlow("T", "Tea", 3, -4, 90),
        SkuFlow("Z", "Zed", 7, 1_000_000, 1),
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
