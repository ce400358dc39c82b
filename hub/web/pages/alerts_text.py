"""The alerts page's words: one sentence per alert from its evidence (``summary``) and the evidence as a list of
key: value items (``readable_evidence``). Pure functions of the stored evidence text (no Flask, no SQL)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EVIDENCE_ITEMS_SHOWN = 10  # per list in the evidence (the newest)


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    key: str
    text: str  # a scalar, or a summary of a list / object
    items: tuple[str, ...] = ()  # the newest entries of a list, each as "key: value, ..."
    more: int = 0  # entries of the list not shown


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ", ".join(_scalar(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items()) or "none"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _g(weight_dg: Any) -> str:
    return f"{weight_dg / 10:.1f} g" if isinstance(weight_dg, int) and not isinstance(weight_dg, bool) else "?"


def _n(value: Any, one: str, many: str) -> str:
    return f"{value} {one if value == 1 else many}"


# What a lane's node says of it in its readings (hub.reconcile.lane_flags), and what to do
_FLAGGED = {
    "uncalibrated": "reports no calibration (tare it empty, then calibrate it with a known weight)",
    "sensor_fault": "reports a load-cell fault (check the cells and their wiring)",
    "overload": "reports more weight than its cells can weigh (take weight off)",
}


def summary(kind: str, text: str) -> str:
    """One sentence a store manager reads before the evidence: what the alert says happened (from the evidence
    reconciliation writes, hub/reconcile/README.md); empty when the evidence lacks what the sentence needs."""
    try:
        ev = json.loads(text)
    except ValueError:
        return ""
    if not isinstance(ev, dict):
        return ""
    sku, lane = ev.get("sku"), ev.get("lane_id")
    try:
        if kind == "shrinkage":
            return (
                f"{_n(ev['unexplained_units'], 'unit', 'units')} of {sku} left lane {lane} and were neither put back"
                f" nor sold within {ev['window_s']:.0f} s (picks {ev['first_pick'][11:19]}"
                f"-{ev['last_pick'][11:19]} UTC)."
            )
        if kind == "damage":
            return (
                f"The weight on lane {lane} ({sku}) dropped without a whole item leaving:"
                f" {_n(ev['suggested_units'], 'unit', 'units')} likely damaged or spilled."
            )
        if kind == "misplaced":
            tags = [t for t in ev.get("tags", []) if "left" not in t]
            said = ""
            if tags:
                names = ", ".join(f"{t['epc']} ({t['sku']})" for t in tags[:3]) + (" ..." if len(tags) > 3 else "")
                said = f"{_n(len(tags), 'tag', 'tags')} of another SKU on lane {lane} ({sku}): {names}."
            if not ev.get("events"):
                return said or f"The misplaced tags left lane {lane} ({sku})."
            last = ev["events"][-1]
            return (
                f"Something weighing {_g(last['weight_delta_dg'])} was put on lane {lane} ({sku}):"
                f" it fits {ev['likely_sku']}, not {sku}." + (f" {said}" if said else "")
            )
        if kind == "tamper":
            tags = ev["tags"]
            names = ", ".join(t["epc"] for t in tags[-3:]) + (" ..." if len(tags) > 3 else "")
            return (
                f"{_n(ev['tags_total'], 'tag', 'tags')} of {sku} left lane {lane} while its weight did not change"
                f" (last {ev['last_departure'][11:19]} UTC): {names}. A unit swapped for something of the same weight,"
                " or a tag torn off."
            )
        if kind == "reorder":
            return (
                f"{sku} ({ev['sku_name']}): {ev['available']} available, at or below the reorder point"
                f" {ev['reorder_point']}; suggested order {ev['suggested_qty']}."
            )
        if kind == "sensor":
            problem = ev.get("problem")
            if problem == "silent":
                return f"Node {ev['node_id']} has not been heard from since {ev['last_seen'][:19]} UTC."
            if problem == "stuck":
                return (
                    f"Lane {lane} ({sku}) reported nothing for {ev['no_event_for_s'] / 60:.0f} min while"
                    f" {_n(ev['unseen_sale_units'], 'unit was', 'units were')} sold: the load cell may be stuck."
                )
            if problem == "drift":
                return (
                    f"Lane {lane} ({sku}): {ev['events_in_period']} uncertain or unexplained weight changes in"
                    f" {ev['period_s'] / 60:.0f} min (threshold {ev['threshold']}): the load cell may drift."
                )
            if problem in _FLAGGED:
                shelf = f"Lane {lane}" + (f" ({sku})" if sku else "")
                return f"{shelf} {_FLAGGED[problem]} since {ev['since'][:19]} UTC: its counts cannot be trusted."
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return ""
    return ""


def cited_epcs(text: str) -> tuple[str, ...]:
    """The RFID EPCs the evidence names (any ``epc`` field at any depth), in the order met, each once."""
    try:
        evidence = json.loads(text)
    except ValueError:
        return ()
    found: dict[str, None] = {}
    stack = [evidence]
    while stack:
        value = stack.pop(0)
        if isinstance(value, dict):
            epc = value.get("epc")
            if isinstance(epc, str) and epc:
                found[epc] = None
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return tuple(found)


def readable_evidence(text: str) -> tuple[EvidenceItem, ...]:
    """The evidence as key: value items; lists of objects (picks, events) as their newest entries."""
    try:
        evidence = json.loads(text)
    except ValueError:
        return (EvidenceItem("evidence", text[:500]),)
    if not isinstance(evidence, dict):
        return (EvidenceItem("evidence", _scalar(evidence)),)
    plain: list[EvidenceItem] = []
    nested: list[EvidenceItem] = []
    for key, value in evidence.items():
        if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            shown = value[-EVIDENCE_ITEMS_SHOWN:]
            summary = f"{len(value)} {'entry' if len(value) == 1 else 'entries'}"
            if len(shown) < len(value):
                summary += f", the newest {len(shown)} shown"
            nested.append(EvidenceItem(key, summary, tuple(_scalar(v) for v in shown), len(value) - len(shown)))
        else:
            plain.append(EvidenceItem(key, _scalar(value)))
    return (*plain, *nested)
