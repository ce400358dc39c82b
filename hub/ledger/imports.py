"""CSV imports of business transactions: sales, receipts, picks, returns, counts (formats: ``README.md``).

A file is imported **all or nothing**: it is parsed and checked completely (header, every row, ids unique within
the file), then its rows are applied in order inside **one** transaction, which is rolled back unless the file had
no problem at all (an unknown SKU or location, or an id already imported with different content, is only found
there). So one report lists every problem, as ``FILE:LINE: reason`` with the physical line number of the row (a
multi-line quoted field counts from its first line). Re-importing a file changes nothing: each row's id becomes
the source reference ``<kind>:<id>`` (the same namespace as the Python API), so known rows are duplicates.

Accepted on purpose, because spreadsheet exports produce them: a UTF-8 byte-order mark at the start of the file,
CRLF (or CR) line endings, blank lines, surrounding spaces in a field, header names in any case. Refused: an empty
file, a byte-order mark anywhere else (two files concatenated), text that is not UTF-8, NUL bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from hub.ledger.models import BACKROOM, MAX_QTY, InvalidArgument, LedgerError, to_ms
from hub.ledger.numbers import MAX_TS_MS, NotWholeNumber, shown, whole_number
from hub.ledger.postings import Tx

ImportKind = Literal["sales", "receipts", "picks", "returns", "counts"]
KINDS: tuple[ImportKind, ...] = ("sales", "receipts", "picks", "returns", "counts")
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}


class ImportTooLarge(InvalidArgument):
    """A file with more rows than the caller accepts in one transaction (the HTTP API's ``MAX_IMPORT_ROWS``)."""


def check_size(rows: int, name: str, max_rows: int | None) -> None:
    """``ImportTooLarge`` for a file of more than ``max_rows`` data rows (None: any size)."""
    if max_rows is not None and rows > max_rows:
        raise ImportTooLarge(
            f"{name} has {rows:,} rows, more than {max_rows:,} in one file: split it into files of"
            f" at most {max_rows:,} rows (each is imported all or nothing; re-sending a file is safe)"
        )


@dataclass(frozen=True)
class Spec:
    required: tuple[str, ...]
    optional: tuple[str, ...]


SPECS: dict[ImportKind, Spec] = {
    "sales": Spec(("id", "timestamp", "sku", "quantity"), ("location",)),
    "receipts": Spec(("id", "timestamp", "sku", "quantity"), ("location",)),
    "picks": Spec(("id", "timestamp", "sku", "quantity", "order"), ("location",)),
    "returns": Spec(("id", "timestamp", "sku", "quantity"), ("restockable", "location")),
    "counts": Spec(("id", "timestamp", "sku", "counted"), ("location",)),
}


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ImportRow:
    line: int
    id: str
    ts_ms: int
    sku: str
    qty: int  # quantity, or the counted quantity for counts
    location: str | None = None
    order: str | None = None
    restockable: bool = True


@dataclass
class ImportReport:
    kind: str  # an ImportKind, or "epcs" (epc_imports)
    name: str
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if not self.ok:
            n = len(self.errors)
            return f"{self.name}: rejected, nothing was written ({n} problem{'s' if n != 1 else ''})"
        if self.rows and self.applied == 0:
            return f"{self.name}: {self.rows} {self.kind} rows, all already in the ledger: nothing changed"
        return (
            f"{self.name}: {self.rows} {self.kind} rows: {self.applied} applied, "
            f"{self.duplicates} already in the ledger"
        )

    def error_lines(self) -> list[str]:
        return [f"{self.name}:{e.line}: {e.message}" for e in self.errors]


def parse_timestamp(text: str) -> int:
    """ISO 8601 with a timezone (``Z`` or an offset), ASCII digits, 1970..9999 -> ms since the epoch; ValueError
    with the reason."""
    try:
        if not text.isascii():
            raise ValueError(text)
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {shown(text, 40)} is not ISO 8601 (e.g. 2025-11-27T14:03:00Z)") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp {shown(text, 40)} has no timezone (add Z or an offset such as +01:00)")
    ms = to_ms(ts)
    if not 0 <= ms <= MAX_TS_MS:
        raise ValueError(f"timestamp {shown(text, 40)} is not between 1970 and 9999 (UTC)")
    return ms


def _quantity(name: str, text: str, *, allow_zero: bool) -> int:
    """A quantity cell: ASCII digits only (``hub.ledger.numbers``), 0 or 1 .. MAX_QTY."""
    try:
        value = whole_number(text, signed=True)
    except NotWholeNumber:
        ascii_only = "" if text.isascii() else " (write it in the digits 0-9)"
        raise ValueError(f"{name} {shown(text)} is not a whole number{ascii_only}") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be {'zero or more' if allow_zero else 'positive'}, not {shown(text, quote=False)}"
        )
    if value > MAX_QTY:
        raise ValueError(f"{name} {shown(text, quote=False)} is larger than {MAX_QTY:,}")
    return value


def _decode(data: bytes) -> tuple[str | None, RowError | None]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, RowError(line, f"not UTF-8 text (byte {data[exc.start]:#04x}): save the file as UTF-8 CSV")
    if "\ufeff" in text:
        line = text[: text.index("\ufeff")].count("\n") + 1
        return None, RowError(line, "stray byte-order mark inside the file (were two files concatenated?)")
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        return None, RowError(line, "NUL byte: this is not a text CSV file")
    return text, None


@dataclass
class ParsedFile:
    rows: list[ImportRow]  # the rows that passed the file checks
    errors: list[RowError]
    data_rows: int = 0  # every data row, good or bad
    skus_of_bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (line, sku): checked against the ledger


def read_records(
    kind: str, spec: Spec, data: bytes, errors: list[RowError]
) -> tuple[list[tuple[int, dict[str, str]]], int] | None:
    """The file's data rows as ``(physical line, {column: stripped value})`` and how many there were, after the
    checks every import shares (encoding, header, field counts, CSV syntax), whose problems go to ``errors``; None
    when the file cannot be read row by row at all (encoding, empty, a bad header)."""
    text, error = _decode(data)
    if error is not None:
        errors.append(error)
        return None
    assert text is not None
    empty = RowError(1, "empty file: a header row is required (" + ",".join(spec.required) + ")")
    if not text.strip():
        errors.append(empty)
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    data_rows = 0
    prev_end = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(prev_end + 1, f"malformed CSV: {exc}"))
            break
        line, prev_end = prev_end + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue  # blank line
        if header is None:
            header = [c.strip().lower() for c in record]
            known = set(spec.required) | set(spec.optional)
            before = len(errors)
            for name in header:
                if name not in known:
                    expected = ",".join(spec.required) + "".join(f"[,{o}]" for o in spec.optional)
                    errors.append(RowError(line, f"unknown column {name!r} (a {kind} file has {expected})"))
            for name in spec.required:
                if name not in header:
                    errors.append(RowError(line, f"missing column {name!r}"))
            for name in sorted({n for n in header if header.count(n) > 1}):
                errors.append(RowError(line, f"column {name!r} appears more than once"))
            if len(errors) > before:
                return None
            continue
        data_rows += 1
        if len(record) != len(header):
            errors.append(RowError(line, f"expected {len(header)} fields, found {len(record)}"))
            continue
        records.append((line, {name: cell.strip() for name, cell in zip(header, record, strict=True)}))
    if header is None and not errors:  # only separators and blank lines
        errors.append(empty)
    return records, data_rows


def parse_csv(kind: ImportKind, data: bytes) -> ParsedFile:
    """Check a file without touching the ledger. Any error rejects the file; rows that passed these checks are
    still checked against the ledger so that one report lists every problem."""
    if kind not in SPECS:
        raise ValueError(f"unknown import kind {kind!r} (one of {', '.join(KINDS)})")
    errors: list[RowError] = []
    read = read_records(kind, SPECS[kind], data, errors)
    if read is None:
        return ParsedFile([], errors)
    records, data_rows = read
    rows: list[ImportRow] = []
    parsed_bad_skus: list[tuple[int, str]] = []
    first_line_of: dict[str, int] = {}
    for line, values in records:
        row_errors: list[str] = []
        row_id = values["id"]
        if not row_id:
            row_errors.append("empty id")
        elif len(row_id) > 64 or not row_id.isprintable():
            row_errors.append(f"id {row_id!r} must be at most 64 printable characters")
        elif row_id in first_line_of:
            row_errors.append(f"id {row_id!r} repeats line {first_line_of[row_id]}")
        else:
            first_line_of[row_id] = line
        ts_ms = qty = 0
        try:
            ts_ms = parse_timestamp(values["timestamp"])
        except ValueError as exc:
            row_errors.append(str(exc))
        sku = values["sku"]
        if not sku:
            row_errors.append("empty sku")
        try:
            if kind == "counts":
                qty = _quantity("counted", values["counted"], allow_zero=True)
            else:
                qty = _quantity("quantity", values["quantity"], allow_zero=False)
        except ValueError as exc:
            row_errors.append(str(exc))
        order = values.get("order")
        if kind == "picks" and not order:
            row_errors.append("empty order")
        restockable = True
        flag = values.get("restockable", "").lower()
        if flag in _NO:
            restockable = False
        elif flag and flag not in _YES:
            row_errors.append(f"restockable {values['restockable']!r} is not yes or no")
        errors.extend(RowError(line, message) for message in row_errors)
        if row_errors and sku:
            parsed_bad_skus.append((line, sku))
        if not row_errors:
            rows.append(ImportRow(line, row_id, ts_ms, sku, qty, values.get("location") or None, order, restockable))
    errors.sort(key=lambda e: e.line)
    return ParsedFile(rows, errors, data_rows, parsed_bad_skus)


async def import_rows(
    tx: Tx, kind: ImportKind, parsed: ParsedFile, *, actor: str, name: str, data: bytes
) -> ImportReport:
    """Apply the parsed rows in the caller's transaction; the report lists the file's and the ledger's problems
    by line. The caller rolls the transaction back unless the report is ok."""
    report = ImportReport(kind, name, rows=parsed.data_rows, errors=list(parsed.errors))
    for line, sku in parsed.skus_of_bad_rows:  # so that a row's every problem is reported at once
        try:
            await tx.require_sku(sku)
        except LedgerError as exc:
            report.errors.append(RowError(line, str(exc)))
    for row in parsed.rows:
        try:
            duplicate = await _apply(tx, kind, row, actor)
        except LedgerError as exc:
            report.errors.append(RowError(row.line, str(exc)))
            continue
        if duplicate:
            report.duplicates += 1
        else:
            report.applied += 1
    report.errors.sort(key=lambda e: e.line)
    if report.ok and report.applied:
        await tx.audit(
            actor,
            f"import_{kind}",
            {
                "file": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "rows": report.rows,
                "applied": report.applied,
                "duplicates": report.duplicates,
            },
        )
    return report


async def _apply(tx: Tx, kind: ImportKind, row: ImportRow, actor: str) -> bool:
    """Post one row; True if it was already in the ledger."""
    if kind == "counts":
        location = row.location or BACKROOM
        return (await tx.count(row.sku, row.qty, ts=row.ts_ms, actor=actor, ref=row.id, location=location)).duplicate
    if kind == "sales":
        result = await tx.sale(row.sku, row.qty, ts=row.ts_ms, actor=actor, ref=row.id, location=row.location)
    elif kind == "receipts":
        location = row.location or BACKROOM
        result = await tx.receipt(row.sku, row.qty, ts=row.ts_ms, actor=actor, ref=row.id, location=location)
    elif kind == "picks":
        assert row.order is not None
        result = await tx.order_pick(
            row.sku, row.qty, row.order, ts=row.ts_ms, actor=actor, ref=row.id, location=row.location
        )
    else:
        result = await tx.return_(
            row.sku,
            row.qty,
            ts=row.ts_ms,
            actor=actor,
            ref=row.id,
            restockable=row.restockable,
            location=row.location or BACKROOM,
        )
    return result.duplicate
