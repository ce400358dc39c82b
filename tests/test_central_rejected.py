"""The ``rejected`` table (refused messages) stays bounded: rows older than ``rejected_keep_days`` and beyond the
newest ``rejected_keep_rows`` are deleted in a batch's own transaction, every ``rejected_prune_interval_s``
(central.toml), against a real PostgreSQL and Mosquitto (tests/fleet_support.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from hub.central.config import ConfigError, load_central_config
from hub.central.schema import migrate
from hub.central.store import Received, RejectedBound, apply_batch, receive
from tests.fleet_support import FreshDatabase
from tests.test_central_consumer import PREFIX, batch, broker_with_users, config, hub_client, publish, rows, running
from tests.test_central_consumer import until as wait_until
from tools.servers.mosquitto import Broker

T = 1_790_000_000_000
DAY = 86_400_000


def refused(n: int) -> Received:
    r = receive(PREFIX, f"{PREFIX}/s1/movements", f"not json {n}".encode())
    assert r.message is None
    return r


def test_central_toml_bounds_rejected_with_sane_defaults(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text('[database]\nhost = "127.0.0.1"\n')
    cfg = load_central_config(path)
    assert (cfg.rejected_keep_days, cfg.rejected_keep_rows, cfg.rejected_prune_interval_s) == (30, 10_000, 600)
    path.write_text(
        '[central]\nrejected_keep_days = 7\nrejected_keep_rows = 500\nrejected_prune_interval_s = 60\n'
        '[database]\nhost = "127.0.0.1"\n'
    )  # fmt: skip
    cfg = load_central_config(path)
    assert (cfg.rejected_keep_days, cfg.rejected_keep_rows, cfg.rejected_prune_interval_s) == (7, 500, 60)
    for setting, value, message in (
        ("rejected_keep_days", "0", "central.rejected_keep_days: must be a whole number 1..36500, not 0"),
        ("rejected_keep_rows", "1.5", "central.rejected_keep_rows: must be a whole number 1..100000000"),
        ("rejected_prune_interval_s", "0", "central.rejected_prune_interval_s: must be a number of seconds > 0"),
        ("rejected_keep", "1", "central.rejected_keep: unknown setting"),
    ):
        path.write_text(f'[central]\n{setting} = {value}\n[database]\nhost = "127.0.0.1"\n')
        with pytest.raises(ConfigError, match=message):
            load_central_config(path)


async def test_pruning_by_age_and_count_in_the_batchs_transaction(postgres_db: FreshDatabase) -> None:
    conn = await asyncpg.connect(postgres_db.dsn)
    other = await asyncpg.connect(postgres_db.dsn)
    try:
        await migrate(conn)
        for day in range(6):  # one refused message a day, days 0..5
            await apply_batch(conn, [refused(day)], T + day * DAY)

        async def kept() -> list[bytes]:
            return [bytes(r["payload"]) for r in await conn.fetch("SELECT payload FROM rejected ORDER BY id")]

        # day 6, keeping 3 days: days 0..2 go, in the transaction that records day 6's refusal
        out = await apply_batch(conn, [refused(6)], T + 6 * DAY, RejectedBound(3 * DAY, 100))
        assert out.rejected_pruned == 3 and len(out.rejected) == 1
        assert await kept() == [b"not json 3", b"not json 4", b"not json 5", b"not json 6"]
        # by count: the newest 2 stay (the batch's own refusal among them), at most `limit` a transaction
        out = await apply_batch(conn, [refused(7)], T + 7 * DAY, RejectedBound(100 * DAY, 2, limit=2))
        assert out.rejected_pruned == 2 and await kept() == [b"not json 5", b"not json 6", b"not json 7"]
        out = await apply_batch(conn, [refused(8)], T + 8 * DAY, RejectedBound(100 * DAY, 2, limit=2))
        assert out.rejected_pruned == 2 and await kept() == [b"not json 7", b"not json 8"]
        # rows another consumer's transaction is deleting are skipped, not waited for
        async with other.transaction():
            await other.execute("SELECT 1 FROM rejected WHERE payload = 'not json 7' FOR UPDATE")
            await conn.execute("SET lock_timeout = '2s'")
            out = await apply_batch(conn, [refused(10)], T + 10 * DAY, RejectedBound(DAY, 1))
        assert out.rejected_pruned == 1 and await kept() == [b"not json 7", b"not json 10"]
        # nothing to prune: nothing deleted (an empty table too)
        out = await apply_batch(conn, [refused(11)], T + 10 * DAY, RejectedBound(100 * DAY, 100))
        assert out.rejected_pruned == 0 and len(await kept()) == 3
    finally:
        await conn.close()
        await other.close()


async def test_the_consumer_prunes_rejected_every_interval(
    tmp_path: Path,
    broker_factory: Callable[..., Broker],
    postgres_db: FreshDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_with_users(broker_factory, ["s1"])
    hub = hub_client(broker, "s1")

    async def rejected() -> list[bytes]:
        return [bytes(r["payload"]) for r in await rows(postgres_db, "SELECT payload FROM rejected ORDER BY id")]

    async def bad(consumer_acked: Callable[[], int], n: int) -> None:
        before = consumer_acked()
        await publish(hub, "s1", "movements", f"not json {n}".encode())
        await wait_until(lambda: _is(consumer_acked() > before), f"bad message {n} acknowledged")
        await asyncio.sleep(0.05)  # the next one in a batch of its own

    try:
        # the default interval (600 s): the first batch prunes (nothing beyond 3 yet), the next ones do not
        slow = config(tmp_path, broker, postgres_db, rejected_keep_rows=3)
        async with running(slow) as consumer:
            for n in range(6):
                await bad(lambda: consumer.stats.acked, n)
            await publish(hub, "s1", "movements", batch("s1", 1, 5))  # good ones are untouched by the pruning
            await wait_until(lambda: _movements(postgres_db, 5), "the good batch stored")
        assert len(await rejected()) == 6 and consumer.stats.rejected_pruned == 0
        # every 5 s (the same client id: the group's messages go to the sessions in it, offline ones too): the
        # next batch deletes the 4 oldest, in its own transaction; a later one is bounded again
        fast = config(tmp_path, broker, postgres_db, rejected_keep_rows=3, rejected_prune_interval_s=5.0)
        with caplog.at_level(logging.INFO, logger="hub.central"):
            async with running(fast) as consumer:
                await bad(lambda: consumer.stats.acked, 6)
                assert await rejected() == [b"not json 4", b"not json 5", b"not json 6"]
                await asyncio.sleep(5.1)
                await bad(lambda: consumer.stats.acked, 7)
                await bad(lambda: consumer.stats.acked, 8)  # within 5 s of the last pruning: kept for now
                assert await rejected() == [b"not json 5", b"not json 6", b"not json 7", b"not json 8"]
                await asyncio.sleep(5.1)
                await bad(lambda: consumer.stats.acked, 9)
        assert await rejected() == [b"not json 7", b"not json 8", b"not json 9"]
        assert consumer.stats.rejected_pruned == 4 + 1 + 2 and consumer.stats.rejected == 4
        assert "deleted 4 refused message(s) from rejected (older than 30 day(s) or beyond the newest 3)" in caplog.text
        assert await _movements(postgres_db, 5)
    finally:
        hub.close()


async def _movements(db: FreshDatabase, n: int) -> bool:
    return len(await rows(db, "SELECT id FROM movements")) == n


async def _is(value: bool) -> bool:
    return value
