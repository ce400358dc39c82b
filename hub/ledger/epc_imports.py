"""The store's EPC -> SKU table, imported from a CSV file: ``epc,sku`` (``smartshelf ledger import epcs FILE``).

Tags whose EPC is not an SGTIN (a private encoding, GID, a tag never encoded) or whose GTIN is on no SKU name no
product by themselves; the store's tag-encoding system knows which EPC it wrote on which item. An imported row
takes precedence over the EPC's GTIN (``tags.tag_sku_sql``), for tags booked before the import too.

Same rules as the business imports (``imports``): the shared file checks (``imports.read_records``), every problem of
a file reported at once by physical line, and **all or nothing** in one transaction of the writer. A row is master
data, not a posting: importing an EPC again with the same SKU changes nothing (counted as a duplicate), with another
SKU it re-maps the EPC (a re-tagged item) and the audit entry (``import_epcs``) lists the old and the new SKU.

Checked per row: the EPC is 1..32 bytes of hex (spaces, dashes and colons between digits are dropped, letters made
upper case), it appears once in the file, the SKU is not empty and the ledger has it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from hub.ledger.epc import InvalidCode, normalise_epc
from hub.ledger.imports import ImportReport, RowError, Spec, read_records
from hub.ledger.postings import Tx

EPCS = "epcs"
SPEC = Spec(("epc", "sku"), ())
_AUDIT_CHANGES_MAX = 100  # re-mapped EPCs listed in the audit entry (all are counted)


@dataclass(frozen=True)
class EpcRow:
    line: int
    epc: str
    sku: str


@dataclass
class ParsedEpcFile:
    rows: list[EpcRow]
    errors: list[RowError]
    data_rows: int = 0


def parse_epc_csv(data: bytes) -> ParsedEpcFile:
    """Check an EPC table without touching the ledger (call it in a thread)."""
    errors: list[RowError] = []
    read = read_records(EPCS, SPEC, data, errors)
    if read is None:
        return ParsedEpcFile([], errors)
    records, data_rows = read
    rows: list[EpcRow] = []
    first_line_of: dict[str, int] = {}
    for line, values in records:
        epc, sku = "", values["sku"]
        try:
            epc = normalise_epc(values["epc"])
        except InvalidCode as exc:
            errors.append(RowError(line, "empty epc" if not values["epc"] else str(exc)))
        if epc in first_line_of:
            errors.append(RowError(line, f"EPC {epc} repeats line {first_line_of[epc]}"))
            epc = ""
        elif epc:
            first_line_of[epc] = line
        if not sku:
            errors.append(RowError(line, "empty sku"))
        elif epc:
            rows.append(EpcRow(line, epc, sku))
    errors.sort(key=lambda e: e.line)
    return ParsedEpcFile(rows, errors, data_rows)


async def import_epc_rows(tx: Tx, parsed: ParsedEpcFile, *, actor: str, name: str, data: bytes) -> ImportReport:
    """Apply the parsed rows in the caller's transaction (rolled back by the caller unless the report is ok)."""
    report = ImportReport(EPCS, name, rows=parsed.data_rows, errors=list(parsed.errors))
    skus = {r[0] for r in await tx.rows("SELECT sku FROM skus")}
    old = {
        r[0]: r[1]
        for r in await tx.rows(
            "SELECT epc, sku FROM epc_skus WHERE epc IN (SELECT value FROM json_each(?))",
            (json.dumps([r.epc for r in parsed.rows]),),
        )
    }
    upserts: list[tuple[str, str, int, str]] = []
    changed: list[dict[str, str]] = []
    for row in parsed.rows:
        if row.sku not in skus:
            report.errors.append(RowError(row.line, f"unknown SKU {row.sku!r}"))
            continue
        before = old.get(row.epc)
        if before == row.sku:
            report.duplicates += 1
            continue
        if before is not None:
            changed.append({"epc": row.epc, "old": before, "new": row.sku})
        upserts.append((row.epc, row.sku, tx.now_ms, actor))
        report.applied += 1
    report.errors.sort(key=lambda e: e.line)
    if not report.ok or not upserts:
        return report
    await tx.conn.executemany(
        "INSERT INTO epc_skus (epc, sku, imported_ms, actor) VALUES (?, ?, ?, ?) ON CONFLICT (epc) DO UPDATE"
        " SET sku = excluded.sku, imported_ms = excluded.imported_ms, actor = excluded.actor",
        upserts,
    )
    await tx.audit(
        actor,
        "import_epcs",
        {
            "file": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "rows": report.rows,
            "applied": report.applied,
            "duplicates": report.duplicates,
            "remapped": len(changed),
            "remapped_epcs": changed[:_AUDIT_CHANGES_MAX],
        },
    )
    return report
