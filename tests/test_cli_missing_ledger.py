"""Only ``smartshelf ledger init`` (and ``restore``, and the hub) make a ledger: every other command refuses a
missing database with one line naming it and how to make it (exit 2), writes nothing, and names the database it
wrote to; ``--config hub.toml`` means the hub's database; a missing directory is named as such, not through the
names of the files a command would have made there (``hub.ledger.cli_common``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hub.cli import main

TS = "2025-11-27T10:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


WRITERS = [
    ("users", "add", "bob", "--role", "clerk", "--password-stdin"),
    ("users", "list"),
    ("users", "disable", "bob"),
    ("users", "enable", "bob"),
    ("users", "reset-password", "bob", "--password-stdin"),
    ("api-clients", "add", "till", "--scopes", "sales"),
    ("api-clients", "disable", "till"),
    ("api-clients", "list"),
    ("ledger", "add-sku", "TEA", "--unit-weight-dg", "1200"),
    ("ledger", "import", "receipts", "r.csv"),
    ("ledger", "assign-lane", "--node", "1", "--lane", "0", "--sku", "TEA"),
    ("ledger", "stock"),
    ("ledger", "backup", "copy.db"),
    ("reconcile",),
    ("reconcile", "run"),
    ("reconcile", "alerts"),
    ("reconcile", "resolve", "1", "found"),
]


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (but for a CSV file), no $SMARTSHELF_DB, a password on stdin."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMARTSHELF_DB", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    (tmp_path / "r.csv").write_text(f"id,timestamp,sku,quantity\nR1,{TS},TEA,7\n")
    return tmp_path


@pytest.mark.parametrize("argv", WRITERS, ids=" ".join)
def test_a_missing_ledger_is_refused_not_made(
    shop: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    group = argv[0]
    rc, out, err = run(capsys, *argv)
    assert (rc, out) == (2, "")
    assert err == (
        f"smartshelf {group}: no ledger database at smartshelf.db: create it with smartshelf ledger init"
        " --db smartshelf.db (or give --config hub.toml to use the hub's)\n"
    )
    assert sorted(p.name for p in shop.iterdir()) == ["r.csv"]  # no smartshelf.db (nor its -wal, .lock, .secret)

    rc, out, err = run(capsys, *argv, "--db", "elsewhere/shop.db")
    assert (rc, out, err) == (2, "", f"smartshelf {group}: elsewhere: no such directory\n")

    (shop / "hub.toml").write_text('[hub]\ndatabase = "state/hub.db"\n')
    (shop / "state").mkdir()
    rc, out, err = run(capsys, *argv, "--config", "hub.toml")
    assert (rc, out) == (2, "")
    hint = "create it with smartshelf ledger init --config hub.toml"
    assert err == f"smartshelf {group}: no ledger database at state/hub.db: {hint}\n"
    assert list((shop / "state").iterdir()) == []


@pytest.mark.parametrize("argv", WRITERS, ids=" ".join)
def test_a_nodes_file_given_as_config_is_not_advised_to_get_a_ledger(
    shop: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """A nodes file (only [[node]] tables, the kind hub.toml lists in [hub] nodes_files) given as --config by mistake:
    following "ledger init --config" with it would make a stray ledger beside it. A hub.toml that keeps every default
    is only [[node]] tables too (the hub runs on one), so it is not refused: the line says to check it instead."""
    (shop / "emu").mkdir()
    (shop / "emu" / "nodes.toml").write_text('[[node]]\nid = 1\nkey = "00112233445566778899aabbccddeeff"\nport = "x"\n')
    rc, out, err = run(capsys, *argv, "--config", "emu/nodes.toml")
    assert (rc, out) == (2, "")
    assert err == (
        f"smartshelf {argv[0]}: no ledger database at emu/smartshelf.db, and --config emu/nodes.toml holds only"
        " [[node]] tables, like a nodes file (the kind hub.toml lists in [hub] nodes_files): check that --config is"
        " the hub's hub.toml; if it is, create its ledger with smartshelf ledger init --config emu/nodes.toml\n"
    )
    assert [p.name for p in (shop / "emu").iterdir()] == ["nodes.toml"]


def test_a_hub_toml_of_node_tables_alone_still_works(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every [hub] setting has a default: a hub.toml of [[node]] tables alone is the hub's (its ledger beside it)."""
    (shop / "hub.toml").write_text('[[node]]\nid = 1\nkey = "00112233445566778899aabbccddeeff"\nport = "x"\n')
    rc, out, _ = run(capsys, "ledger", "init", "--config", "hub.toml")
    assert rc == 0 and out.startswith("smartshelf.db: schema version ")
    rc, out, err = run(capsys, "users", "add", "bob", "--role", "clerk", "--password-stdin", "--config", "hub.toml")
    assert (rc, out, err) == (0, "user bob added with role clerk (ledger smartshelf.db)\n", "")
    rc, out, err = run(capsys, "ledger", "assign-lane", "--node", "1", "--lane", "0", "--config", "hub.toml")
    assert (rc, err) == (0, "") and out.startswith("lane node1-lane0 (node 1, lane 0): unassigned")


def test_writes_go_to_the_ledger_named_and_say_which(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (shop / "hub.toml").write_text('[hub]\ndatabase = "state/hub.db"\n')
    (shop / "state").mkdir()
    rc, out, _ = run(capsys, "ledger", "init", "--config", "hub.toml")
    assert rc == 0 and out.startswith("state/hub.db: schema version ")
    cfg = ("--config", "hub.toml")
    assert run(capsys, "users", "add", "bob", "--role", "clerk", "--password-stdin", *cfg)[1] == (
        "user bob added with role clerk (ledger state/hub.db)\n"
    )
    rc, _, err = run(capsys, "api-clients", "add", "till", "--scopes", "sales", *cfg)
    assert rc == 0 and err.startswith("API client till added with scopes sales (ledger state/hub.db). ")
    assert run(capsys, "ledger", "add-sku", "TEA", "--unit-weight-dg", "1200", *cfg)[1] == (
        "SKU TEA: saved (ledger state/hub.db)\n"
    )
    rc, out, _ = run(capsys, "ledger", "import", "receipts", "r.csv", *cfg)
    assert rc == 0 and out.endswith(" (ledger state/hub.db)\n")
    rc, out, _ = run(capsys, "ledger", "stock", *cfg)
    assert rc == 0 and out.split()[-3:] == ["TEA", "backroom", "7"]
    rc, out, _ = run(capsys, "reconcile", "alerts", *cfg)
    assert (rc, out) == (0, "no unresolved alerts in state/hub.db\n")
    assert sorted(p.name for p in shop.iterdir()) == ["hub.toml", "r.csv", "state"]  # nothing beside it


def test_a_missing_directory_is_named(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "ledger", "init")[0] == 0
    for argv, group in [
        (("users", "add", "bob", "--role", "clerk", "--password-stdin", "--db", "nodir/x.db"), "users"),
        (("ledger", "init", "--db", "nodir/x.db"), "ledger"),
        (("ledger", "backup", "nodir/x.db"), "ledger"),
        (("ledger", "restore", "smartshelf.db", "--db", "nodir/x.db"), "ledger"),
    ]:
        rc, out, err = run(capsys, *argv)
        assert (rc, out, err) == (2, "", f"smartshelf {group}: nodir: no such directory\n"), argv
    assert not (shop / "nodir").exists()
    (shop / "afile").write_text("")
    rc, _, err = run(capsys, "ledger", "backup", "afile/x.db")
    assert (rc, err) == (2, "smartshelf ledger: afile: not a directory\n")
