"""hub.toml: what loads, and one-line errors that name the setting for everything that does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import main
from hub.config import DEFAULT_BAUD, ConfigError, load_config

KEY = "00112233445566778899aabbccddeeff"
BLE = f'[[node]]\nid = 1\nkey = "{KEY}"\nlink = "ble"\n'
EMULATOR_FRAGMENT = f'[[node]]\nid = 1\nkey = "{KEY}"\nport = "/tmp/smartshelf-emu/node-1"\n'


def write(directory: Path, text: str, name: str = "hub.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_the_emulators_node_table_loads_as_it_is(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EMULATOR_FRAGMENT))
    (node,) = cfg.nodes
    assert (node.node_id, node.key, node.port, node.baud) == (
        1,
        bytes.fromhex(KEY),
        "/tmp/smartshelf-emu/node-1",
        DEFAULT_BAUD,
    )
    assert cfg.database == tmp_path / "smartshelf.db" and cfg.synchronous == "FULL" and cfg.backup is None
    assert cfg.control_socket == tmp_path / "smartshelf.db.sock"
    assert KEY not in repr(node)  # keys stay out of logs


def test_full_config_with_an_included_nodes_file(tmp_path: Path) -> None:
    write(tmp_path, EMULATOR_FRAGMENT, "emulated-nodes.toml")
    cfg = load_config(
        write(
            tmp_path,
            '[hub]\ndatabase = "data/shelf.db"\nsynchronous = "normal"\nlog_level = "DEBUG"\nbackup_dir = "bk"\n'
            'backup_keep = 3\nstatus_interval_s = 5\nnodes_files = ["emulated-nodes.toml"]\n\n'
            f'[[node]]\nid = 2\nkey = "{KEY * 2}"\nport = "/dev/ttyACM0"\nbaud = 921600\n\n'
            "[reconcile]\nwindow_s = 900\n",
        )
    )
    assert [(n.node_id, n.port, n.baud) for n in cfg.nodes] == [
        (2, "/dev/ttyACM0", 921600),
        (1, "/tmp/smartshelf-emu/node-1", DEFAULT_BAUD),
    ]
    assert cfg.database == tmp_path / "data" / "shelf.db" and cfg.synchronous == "NORMAL" and cfg.log_level == "debug"
    assert cfg.backup is not None and cfg.backup.directory == tmp_path / "bk" and cfg.backup.keep == 3
    assert cfg.backup.interval_s == 3600 and cfg.status_interval_s == 5
    assert dict(cfg.reconcile) == {"window_s": 900}


NODE = f'[[node]]\nid = 1\nkey = "{KEY}"\nport = "/dev/ttyACM0"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[hubb]\n", "hub.toml: hubb: unknown setting"),
        ("[hub]\ndatabse = 'x.db'\n", "hub.toml: hub.databse: unknown setting"),
        ("[hub]\nsynchronous = 'OFF'\n", "hub.toml: hub.synchronous: must be FULL or NORMAL, not 'OFF'"),
        ("[hub]\ndatabase = ''\n", "hub.toml: hub.database: must not be empty"),
        ("[hub]\ndatabase = 5\n", "hub.toml: hub.database: must be a string, not 5"),
        ("[hub]\nlog_level = 'loud'\n", "hub.toml: hub.log_level: must be one of"),
        ("[hub]\nbackup_interval_s = 60\n", "hub.toml: hub.backup_interval_s: needs hub.backup_dir"),
        ("[hub]\nbackup_dir = 'b'\nbackup_interval_s = -1\n", "hub.toml: hub.backup_interval_s: must be a number"),
        ("[hub]\nbackup_dir = 'b'\nbackup_keep = 0\n", "hub.toml: hub.backup_keep: must be a whole number 1.."),
        ("[hub]\nstatus_interval_s = true\n", "hub.toml: hub.status_interval_s: must be a number of seconds"),
        ("[hub]\ncontrol_socket = '/tmp/" + "x" * 120 + "'\n", "hub.toml: hub.control_socket: the control socket"),
        ("[hub]\nnodes_files = 'a.toml'\n", "hub.toml: hub.nodes_files: must be a list"),
        ("[hub]\nnodes_files = ['missing.toml']\n", "hub.toml: hub.nodes_files[1]: no such file"),
        ("node = 3\n", "hub.toml: node: must be [[node]] tables"),
        ("[[node]]\nid = 1\nport = '/dev/ttyACM0'\n", "hub.toml: node[1].key: missing"),
        ("[[node]]\nkey = '" + KEY + "'\nport = '/dev/x'\n", "hub.toml: node[1].id: missing"),
        ("[[node]]\nid = 1\nkey = '" + KEY + "'\n", "hub.toml: node[1].port: missing"),
        (NODE + "[[node]]\nid = 2\nkey = 'xyz'\nport = '/dev/b'\n", "hub.toml: node[2].key: must be 32..128 hex"),
        ("[[node]]\nid = 1\nkey = '0011'\nport = '/dev/b'\n", "hub.toml: node[1].key: must be 32..128 hex"),
        ("[[node]]\nid = 1\nkey = '" + KEY + "0'\nport = '/dev/b'\n", "hub.toml: node[1].key: must be 32..128 hex"),
        ("[[node]]\nid = 1\nkey = '" + "ab" * 65 + "'\nport = '/dev/b'\n", "hub.toml: node[1].key: must be"),
        ("[[node]]\nid = '1'\nkey = '" + KEY + "'\nport = '/dev/b'\n", "hub.toml: node[1].id: must be a node id"),
        ("[[node]]\nid = 0\nkey = '" + KEY + "'\nport = '/dev/b'\n", "hub.toml: node[1].id: must be a node id 1.."),
        ("[[node]]\nid = true\nkey = '" + KEY + "'\nport = '/dev/b'\n", "hub.toml: node[1].id: must be a node id"),
        ("[[node]]\nid = 1\nkey = '" + KEY + "'\nport = ''\n", "hub.toml: node[1].port: must not be empty"),
        ("[[node]]\nid = 1\nkey = '" + KEY + "'\nport = '  '\n", "hub.toml: node[1].port: must not be empty"),
        ("[[node]]\nid = 1\nkey = '" + KEY + "'\nport = '/dev/b'\nbaud = 0\n", "hub.toml: node[1].baud: must be"),
        ("[[node]]\nid = 1\nkey = '" + KEY + "'\nport = '/dev/b'\nspeed = 9600\n", "hub.toml: node[1].speed: unknown"),
        (NODE + NODE.replace("ttyACM0", "ttyACM1"), "hub.toml: node[2].id: node 1 is already defined"),
        (NODE + NODE.replace("id = 1", "id = 2"), "hub.toml: node[2].port: /dev/ttyACM0 is already the port of node 1"),
        ("[reconcile]\n", None),
        (BLE, None),
        (BLE.replace('"ble"', '"radio"'), 'hub.toml: node[1].link: must be "serial" or "ble", not \'radio\''),
        (BLE + "port = '/dev/x'\n", 'hub.toml: node[1].port: a node with link = "ble" has no serial port'),
        (BLE + "address = 'C2:5E:5E:00:00'\n", "hub.toml: node[1].address: must be a BLE address like"),
        (NODE + "address = 'C2:5E:5E:00:00:01'\n", 'hub.toml: node[1].address: is for link = "ble" nodes'),
        (
            BLE
            + "address = 'c2:5e:5e:00:00:01'\n"
            + BLE.replace("id = 1", "id = 2")
            + "address = 'C2:5E:5E:00:00:01'\n",
            "hub.toml: node[2].address: C2:5E:5E:00:00:01 is already the address of node 1",
        ),
        ("[ble]\nadapter = 'hci0'\n", 'hub.toml: ble.adapter: must be "bluez" or "bumble:<HCI transport>"'),
        ("[ble]\nslots = 0\n", "hub.toml: ble.slots: must be a whole number 1..32"),
        ("[ble]\nmtu = 600\n", "hub.toml: ble.mtu: must be a whole number 23..517"),
        ("[ble]\nidle_s = 0.01\n", "hub.toml: ble.idle_s: must be 0.1 .. 600 seconds"),
        ("[ble]\nscan = 'passive'\n", "hub.toml: ble.scan: unknown setting"),
        ("reconcile = 5\n", "hub.toml: reconcile: must be a table"),
        ("[hub\n", "hub.toml: invalid TOML"),
    ],
)
def test_every_config_error_is_one_line_naming_the_setting(
    tmp_path: Path, text: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, text)
    if expected is None:
        load_config(Path("hub.toml"))
        return
    with pytest.raises(ConfigError) as info:
        load_config(Path("hub.toml"))
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert path.exists()


def test_errors_in_an_included_file_name_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, f'[[node]]\nid = 1\nkey = "{KEY}"\nport = "/dev/a"\n[hub]\n', "emu.toml")
    write(tmp_path, '[hub]\nnodes_files = ["emu.toml"]\n')
    with pytest.raises(ConfigError, match=r"^emu.toml: hub: unknown setting \(a nodes file holds only"):
        load_config(Path("hub.toml"))
    write(tmp_path, f'[[node]]\nid = 1\nkey = "{KEY}"\nport = "/dev/a"\n', "emu.toml")
    write(tmp_path, f'[hub]\nnodes_files = ["emu.toml"]\n[[node]]\nid = 1\nkey = "{KEY}"\nport = "/dev/b"\n')
    with pytest.raises(
        ConfigError, match=r"^emu.toml: node\[1\].id: node 1 is already defined \(hub.toml: node\[1\]\)"
    ):
        load_config(Path("hub.toml"))


def test_a_missing_device_is_not_a_config_error(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, NODE.replace("/dev/ttyACM0", str(tmp_path / "unplugged"))))
    assert cfg.nodes[0].port == str(tmp_path / "unplugged")


def test_hub_run_with_a_bad_config_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[[node]]\nid = 1\nkey = 'nothex'\nport = '/dev/ttyACM0'\n")
    assert main(["hub", "run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "node[1].key: must be 32..128 hex characters" in err
    assert main(["hub", "run", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err


def test_ble_nodes_and_the_adapter(tmp_path: Path) -> None:
    text = "[ble]\nadapter = 'bumble:unix:/tmp/hci.sock'\nslots = 3\n" + BLE + "address = 'c2:5e:5e:00:00:01'\n"
    cfg = load_config(write(tmp_path, text))
    (node,) = cfg.nodes
    assert (node.link, node.address, node.port) == ("ble", "C2:5E:5E:00:00:01", "")
    assert (cfg.ble.adapter, cfg.ble.slots, cfg.ble.mtu, cfg.ble.idle_s) == ("bumble:unix:/tmp/hci.sock", 3, 247, 2.0)
    assert load_config(write(tmp_path, EMULATOR_FRAGMENT)).ble.adapter == "bluez"  # the default: BlueZ
