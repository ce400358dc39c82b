"""RFID in the ledger: EPC and GTIN codes, tag events booked once through the sensor batches, the presence they
move (in the node's order), restarts and reader outages, expiry of tags not read again, retention."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import Applied, Duplicate, LedgerService, SensorEvent, SensorGap, Sku
from hub.ledger.epc import InvalidCode, decode, gtin_check_digit, normalise_epc, normalise_gtin
from hub.ledger.models import InvalidArgument
from hub.ledger.schema import connect, migrate
from hub.ledger.tags import LOST, READER_OK, READER_SILENT, READER_STARTING, SEEN, ReaderReport, TagEvent, TagRecheck
from hub.schema import MIGRATIONS
from shared_protocol.messages import KIND_PICK

T = 1_700_000_000_000
TDS_EPC = "3074257BF7194E4000001A85"  # GS1 TDS: urn:epc:tag:sgtin-96:3.0614141.812345.6789
TDS_GTIN = "80614141123458"
OTHER = "E2801160600002054CC2096F"  # a tag still holding its chip maker's EPC: no SGTIN

# ------------------------------------------------------------------------------------------------ the codes


def _sgtin96(filter_: int, partition: int, company: int, item: int, serial: int) -> str:
    """SGTIN-96 bits packed by hand from the TDS partition table (independent of the decoder under test)."""
    company_bits = (40, 37, 34, 30, 27, 24, 20)[partition]
    value = 0x30
    for v, bits in ((filter_, 3), (partition, 3), (company, company_bits), (item, 44 - company_bits), (serial, 38)):
        value = (value << bits) | v
    return f"{value:024X}"


def test_the_tds_example_decodes_to_its_gtin_and_serial() -> None:
    code = decode(TDS_EPC)
    assert code is not None
    assert (code.scheme, code.gtin, code.serial) == ("sgtin-96", TDS_GTIN, "6789")
    assert code.uri == "urn:epc:id:sgtin:0614141.812345.6789"
    assert _sgtin96(3, 5, 614141, 812345, 6789) == TDS_EPC  # the packer agrees with the standard's example


@pytest.mark.parametrize("partition", range(7))
def test_every_sgtin_partition_decodes(partition: int) -> None:
    digits = 12 - partition  # company prefix digits
    company = int("4" + "0" * (digits - 2) + "7")
    item_digits = 13 - digits
    item = int("1" + "2" * (item_digits - 1)) if item_digits > 1 else 1  # indicator 1, then the item reference
    body = f"{item_digits and str(item)[0]}{company:0{digits}d}{str(item)[1:]}"
    gtin = body + str(gtin_check_digit(body))
    code = decode(_sgtin96(1, partition, company, item, 274_877_906_943))
    assert code is not None and code.gtin == gtin and code.serial == "274877906943"


def test_what_is_no_sgtin_decodes_to_nothing() -> None:
    assert decode(OTHER) is None  # another header
    assert decode(TDS_EPC[:-2]) is None  # an SGTIN-96 header on 11 bytes
    assert decode(TDS_EPC + "00") is None  # ... on 13
    bad_partition = _sgtin96(3, 5, 614141, 812345, 1)
    assert decode(f"{(int(bad_partition, 16) | (7 << 82)):024X}") is None  # partition 7 does not exist
    assert decode(_sgtin96(3, 6, 10**6, 1, 1)) is None  # a company prefix wider than its 6 digits


def test_sgtin_198_decodes_too() -> None:
    value = 0x36
    serial = "Hello"
    for v, bits in ((3, 3), (5, 3), (614141, 24), (812345, 20)):
        value = (value << bits) | v
    for ch in serial.ljust(20, "\0"):
        value = (value << 7) | ord(ch)
    value <<= 10  # 198 bits padded to 13 16-bit words
    code = decode(f"{value:052X}")
    assert code is not None and (code.scheme, code.gtin, code.serial) == ("sgtin-198", TDS_GTIN, "Hello")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3074257bf7194e4000001a85", TDS_EPC), ("30 74-25:7B F7194E4000001A85", TDS_EPC), ("ab", "AB")],
)
def test_epcs_are_normalised(text: str, expected: str) -> None:
    assert normalise_epc(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "3", "30Z4", "00" * 33, "3074 257", "\ufb00", "\uff13\uff10", "30\u00a074", "30\u200374", "\u300030"],
)  # the ligature ff, full-width digits, non-ASCII spaces: typed or pasted, never hex
def test_what_is_no_epc_is_refused(text: str) -> None:
    with pytest.raises(InvalidCode):
        normalise_epc(text)


@pytest.mark.parametrize(
    ("text", "stored"),
    [("96385074", "00000096385074"), ("036000291452", "00036000291452"), ("4006381333931", "04006381333931"),
     (TDS_GTIN, TDS_GTIN)],
)  # fmt: skip
def test_gtins_are_checked_by_their_check_digit_and_stored_as_14_digits(text: str, stored: str) -> None:
    assert normalise_gtin(text) == stored


@pytest.mark.parametrize(
    "text", ["4006381333932", "400638133393", "40063813339310", "12345678901a", "٤٠٠٦٣٨١٣٣٣٩٣١", "\u00a04006381333931"]
)
def test_bad_gtins_are_refused(text: str) -> None:
    with pytest.raises(InvalidCode):
        normalise_gtin(text)


# ---------------------------------------------------------------------------------------------- the ledger


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as service:
        await service.add_sku(Sku("COLA", "Cola", 3500, 20, gtin="8061414112345-8".replace("-", "")), actor="t")
        await service.add_sku(Sku("TEA", "Tea", 1200), actor="t")
        await service.assign_lane(1, 0, "COLA", actor="t", lane_id="A1")
        await service.assign_lane(1, 1, "TEA", actor="t", lane_id="B1")
        yield service


def rows(ledger: LedgerService, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(ledger.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def tag(seq: int, kind: str = SEEN, lane: int = 0, epc: str = TDS_EPC, ts: int = T, **kw: Any) -> TagEvent:
    return TagEvent(1, seq, lane, kind, epc, ts, -45 if kind == SEEN else None, **kw)


async def test_a_sku_gtin_is_checked_stored_as_14_digits_and_never_shared(ledger: LedgerService) -> None:
    assert rows(ledger, "SELECT gtin FROM skus WHERE sku = 'COLA'") == [(TDS_GTIN,)]
    await ledger.add_sku(Sku("SOUP", "Soup", 4000, gtin="96385074"), actor="t")
    assert rows(ledger, "SELECT gtin FROM skus WHERE sku = 'SOUP'") == [("00000096385074",)]
    with pytest.raises(InvalidArgument, match="wrong check digit"):
        await ledger.add_sku(Sku("JAM", "Jam", 3000, gtin="96385075"), actor="t")
    with pytest.raises(InvalidArgument, match="belongs to SKU 'COLA'"):
        await ledger.add_sku(Sku("JAM", "Jam", 3000, gtin=TDS_GTIN), actor="t")
    audit = rows(ledger, "SELECT details FROM audit WHERE action = 'add_sku' AND details LIKE '%SOUP%'")
    assert json.loads(audit[0][0])["new"][-1] == "00000096385074"


async def test_tag_events_share_the_nodes_sequence_and_are_booked_once(ledger: LedgerService) -> None:
    results = await asyncio.gather(
        ledger.submit(tag(1)),
        ledger.submit(SensorEvent(1, 2, 0, KIND_PICK, -1, -3500, 95, T + 1000)),
        ledger.submit(tag(3, LOST, ts=T + 1500)),
    )
    assert [type(r) for r in results] == [Applied, Applied, Applied]
    assert isinstance(await ledger.submit(tag(1)), Duplicate)  # re-sent
    assert isinstance(await ledger.submit(tag(2)), Duplicate)  # the weight event's number: the same event
    assert rows(ledger, "SELECT highest_contiguous_event_seq FROM nodes") == [(3,)]
    booked = rows(ledger, "SELECT event_seq, kind, effect, ts_ms, sku, gtin FROM tag_events ORDER BY id")
    assert booked == [(1, "seen", "arrived", T, "COLA", TDS_GTIN), (3, "lost", "left", T + 1500, "COLA", TDS_GTIN)]
    async with await ledger.reader() as reader:
        assert await reader.events_above(1, 0) == {1, 2, 3}  # a restarted hub's marks count both kinds


async def test_presence_follows_the_nodes_order_not_the_arrival_order(ledger: LedgerService) -> None:
    await ledger.submit(tag(1, ts=T))
    await ledger.submit(tag(3, ts=T + 9000))  # the tag came back (3) ...
    late = await ledger.submit(tag(2, LOST, ts=T + 5000))  # ... after leaving (2), whose frame came late
    assert isinstance(late, Applied)
    assert rows(ledger, "SELECT effect FROM tag_events WHERE event_seq = 2") == [("superseded",)]
    assert rows(ledger, "SELECT present, seq, first_seen_ms FROM tag_presence") == [(1, 3, T)]  # still there


async def test_a_seen_tag_already_present_stays_and_a_lost_one_without_arrival_is_still_a_departure(
    ledger: LedgerService,
) -> None:
    await ledger.submit(tag(1, ts=T))
    await ledger.submit(tag(2, ts=T + 60_000))  # read again (e.g. a second tag_seen): not a new arrival
    assert rows(ledger, "SELECT present, first_seen_ms, last_read_ms FROM tag_presence") == [(1, T, T + 60_000)]
    await ledger.submit(tag(3, LOST, lane=1, epc=OTHER, ts=T + 70_000))
    assert rows(ledger, "SELECT effect, sku, note IS NOT NULL FROM tag_events WHERE event_seq = 3") == [
        ("left", None, 1)  # unknown EPC: tracked, no SKU
    ]


async def test_the_stores_epc_table_takes_precedence_over_the_gtin(ledger: LedgerService) -> None:
    report = await ledger.import_epcs(f"epc,sku\n{TDS_EPC},TEA\n{OTHER},COLA\n".encode(), actor="t")
    assert report.ok and report.applied == 2
    await ledger.submit(tag(1))
    await ledger.submit(tag(2, epc=OTHER))
    assert rows(ledger, "SELECT epc, sku FROM tag_events ORDER BY id") == [(TDS_EPC, "TEA"), (OTHER, "COLA")]


async def test_an_event_from_an_earlier_boot_is_marked_and_a_tag_event_on_an_unknown_lane_registers_it(
    ledger: LedgerService,
) -> None:
    await ledger.submit(tag(1, ts=T, ts_known=False))
    booked = rows(ledger, "SELECT ts_known, note FROM tag_events")
    assert booked[0][0] == 0 and "earlier boot" in booked[0][1]
    assert rows(ledger, "SELECT unconfirmed_ms FROM tag_presence") == [(T,)]  # not evidence it is there now
    await ledger.submit(tag(2, lane=5))
    assert rows(ledger, "SELECT lane_id FROM tag_events WHERE event_seq = 2") == [("node1-lane5",)]
    assert rows(ledger, "SELECT kind FROM alerts") == [("unassigned_lane",)]


async def test_invalid_tag_items_fail_alone(ledger: LedgerService) -> None:
    bad: list[asyncio.Future[Any]] = [
        ledger.submit(TagEvent(1, 1, 0, "gone", TDS_EPC, T)),
        ledger.submit(TagEvent(1, 2, 0, SEEN, "3074zz", T)),
        ledger.submit(TagEvent(1, 3, 40, SEEN, TDS_EPC, T)),
        ledger.submit(ReaderReport(1, 9, T, READER_OK)),
    ]
    good = ledger.submit(tag(4))
    for fut in bad:
        with pytest.raises(InvalidArgument):
            await fut
    assert isinstance(await good, Applied)


async def test_a_restart_makes_tags_unconfirmed_and_expiry_waits_for_the_readers(ledger: LedgerService) -> None:
    await ledger.submit(tag(1, ts=T))
    await ledger.submit(tag(2, epc=OTHER, lane=1, ts=T))
    assert await ledger.submit(TagRecheck(1, T + 10_000)) == 2
    await ledger.submit(ReaderReport(1, 0, T + 10_000, READER_STARTING))  # readers restarting with the node
    await ledger.submit(tag(3, ts=T + 15_000))  # read again: confirmed, its arrival unchanged
    assert rows(ledger, "SELECT epc, unconfirmed_ms, first_seen_ms FROM tag_presence ORDER BY lane_id") == [
        (TDS_EPC, None, T),
        (OTHER, T + 10_000, T),
    ]
    assert await ledger.transact(lambda tx: tx.expire_unconfirmed_tags(T + 20_000)) == 0  # a reader is not reading
    await ledger.submit(ReaderReport(1, 0, T + 30_000, READER_OK))
    assert await ledger.transact(lambda tx: tx.expire_unconfirmed_tags(T + 25_000)) == 0  # readers back since 30 s
    assert await ledger.transact(lambda tx: tx.expire_unconfirmed_tags(T + 40_000)) == 1
    gone = rows(ledger, "SELECT kind, effect, ts_ms, ts_known, event_seq, sku FROM tag_events WHERE kind = 'expired'")
    assert gone == [("expired", "left", T + 10_000, 0, None, None)]
    assert rows(ledger, "SELECT present FROM tag_presence WHERE epc = ?", (OTHER,)) == [(0,)]


async def test_reader_reports_open_and_close_outages_and_confirm_reads(ledger: LedgerService) -> None:
    await ledger.submit(tag(1, ts=T))
    await ledger.submit(ReaderReport(1, 0, T + 1000, READER_SILENT))
    await ledger.submit(ReaderReport(1, 0, T + 2000, READER_SILENT))  # still: one outage
    await ledger.submit(ReaderReport(1, 0, T + 5000, READER_OK))
    await ledger.submit(ReaderReport(1, 1, T + 9000, READER_OK, missed_from_ms=T + 7000, missed_cause="reset"))
    assert rows(ledger, "SELECT reader, from_ms, to_ms, cause FROM rfid_outages ORDER BY id") == [
        (0, T + 1000, T + 5000, "silent"),
        (1, T + 7000, T + 9000, "reset"),
    ]
    await ledger.submit(ReaderReport(1, 0, T + 60_000, READER_OK, all_ok=True))
    assert rows(ledger, "SELECT last_read_ms FROM tag_presence") == [(T + 60_000,)]


async def test_old_tag_events_are_pruned_and_the_tags_on_a_lane_are_kept(ledger: LedgerService) -> None:
    day = 86_400_000
    await ledger.submit(tag(1, ts=T - 40 * day))  # present since long ago: kept
    await ledger.submit(tag(2, epc=OTHER, ts=T - 40 * day))
    await ledger.submit(tag(3, LOST, epc=OTHER, ts=T - 39 * day))  # gone long ago: pruned with its events
    await ledger.submit(ReaderReport(1, 0, T - 35 * day, READER_SILENT))
    await ledger.submit(ReaderReport(1, 0, T - 34 * day, READER_OK))
    await ledger.submit(ReaderReport(1, 1, T - 33 * day, READER_SILENT))  # still silent: kept
    await ledger.submit(tag(4, LOST, lane=1, epc=OTHER, ts=T - day))
    assert await ledger.prune_tags(T - 30 * day, max_rows=2) == 5  # 3 events, 1 outage, 1 stay: in batches of 2
    assert rows(ledger, "SELECT event_seq FROM tag_events") == [(4,)]
    assert rows(ledger, "SELECT lane_id, epc, present FROM tag_presence ORDER BY lane_id") == [
        ("A1", TDS_EPC, 1),
        ("B1", OTHER, 0),
    ]
    assert rows(ledger, "SELECT reader, to_ms FROM rfid_outages") == [(1, None)]
    assert ledger.stats.tag_rows_pruned == 5


async def test_tag_event_ids_are_never_reused_once_the_newest_events_are_pruned(ledger: LedgerService) -> None:
    day = 86_400_000
    for seq in range(1, 6):  # the tag comes and goes, then stays: five events, forty days ago
        await ledger.submit(tag(seq, LOST if seq % 2 == 0 else SEEN, ts=T - 40 * day + seq * 1000))
    assert await ledger.prune_tags(T - 30 * day) == 5
    assert rows(ledger, "SELECT count(*) FROM tag_events") == [(0,)]
    lost = await ledger.submit(tag(6, LOST, ts=T))
    assert isinstance(lost, Applied) and lost.movement_ids == (6,)  # not 1: reconciliation's mark is at 5
    await ledger.submit(tag(7, epc=OTHER, lane=1, ts=T))
    await ledger.submit(TagRecheck(1, T + 10_000))
    assert await ledger.transact(lambda tx: tx.expire_unconfirmed_tags(T + 20_000)) == 1
    assert rows(ledger, "SELECT id, event_seq, kind FROM tag_events ORDER BY id") == [
        (6, 6, "lost"),
        (7, 7, "seen"),
        (8, None, "expired"),
    ]
    assert rows(ledger, "SELECT event_id FROM tag_presence ORDER BY lane_id") == [(6,), (8,)]


async def test_expiry_waits_only_for_an_outage_that_may_be_the_tags_reader(ledger: LedgerService) -> None:
    await ledger.submit(ReaderReport(1, 1, T, READER_SILENT))  # reader 1 stops reading, for good
    await ledger.submit(tag(1, ts=T - 60_000))  # read before it stopped: it may be on reader 1
    await ledger.submit(tag(2, epc=OTHER, lane=1, ts=T + 60_000))  # read after: on a reader that works
    await ledger.submit(TagRecheck(1, T + 100_000))
    await ledger.submit(ReaderReport(1, 0, T + 100_000, READER_STARTING))
    await ledger.submit(ReaderReport(1, 0, T + 110_000, READER_OK))
    assert await ledger.transact(lambda tx: tx.expire_unconfirmed_tags(T + 105_000)) == 0  # reader 0 not back yet
    assert await ledger.transact(lambda tx: tx.expire_unconfirmed_tags(T + 120_000)) == 1
    assert rows(ledger, "SELECT epc FROM tag_events WHERE kind = 'expired'") == [(OTHER,)]
    assert rows(ledger, "SELECT epc, unconfirmed_ms FROM tag_presence WHERE present = 1") == [(TDS_EPC, T + 100_000)]


async def test_a_gap_of_no_units_moves_the_mark_without_a_stock_movement(ledger: LedgerService) -> None:
    await ledger.submit(tag(4))
    result = await ledger.submit(SensorGap(1, 0, 0, "ev1-3:f9:lane0", T, skip_events_to=3, note="dropped"))
    assert isinstance(result, Applied) and result.movement_ids == ()
    assert rows(ledger, "SELECT count(*) FROM movements WHERE reason = 'sensor_gap'") == [(0,)]
    assert rows(ledger, "SELECT highest_contiguous_event_seq FROM nodes") == [(4,)]
    assert [json.loads(r[0])["to"] for r in rows(ledger, "SELECT details FROM audit WHERE action = 'event_skip'")] == [
        3
    ]


async def test_a_version_6_database_upgrades_with_its_skus_and_takes_tags(tmp_path: Path) -> None:
    db = tmp_path / "v6.db"
    conn = connect(db)
    migrate(conn, MIGRATIONS[:6])
    conn.execute("INSERT INTO skus (sku, name, unit_weight_dg) VALUES ('COLA', 'Cola', 3500)")
    conn.close()
    async with LedgerService(db, migrations=MIGRATIONS) as service:
        await service.submit(tag(1, lane=2))
    assert rows(service, "SELECT sku, gtin FROM skus") == [("COLA", None)]
    assert rows(service, "SELECT max(version) FROM schema_version") == [(MIGRATIONS[-1].version,)]
    assert rows(service, "SELECT count(*) FROM tag_events") == [(1,)]


async def test_a_restart_and_the_tags_read_again_in_one_batch_apply_in_their_order(ledger: LedgerService) -> None:
    await ledger.submit(tag(1, ts=T))
    await ledger.submit(tag(2, epc=OTHER, lane=1, ts=T))
    recheck = ledger.submit(TagRecheck(1, T + 10_000))  # the hello of a new boot ...
    again = ledger.submit(tag(3, ts=T + 12_000))  # ... and the node's first read after it, in the same batch
    assert (await recheck, isinstance(await again, Applied)) == (2, True)
    assert rows(ledger, "SELECT epc, unconfirmed_ms FROM tag_presence ORDER BY lane_id") == [
        (TDS_EPC, None),  # read after the restart: confirmed, not marked again by the restart before it
        (OTHER, T + 10_000),
    ]
