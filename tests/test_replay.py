"""`smartshelf replay` and `smartshelf bench sensing --quick`."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main
from tools.mpy_runtime import REPO_ROOT


def _trace(rate: float = 80.0, jitter: float = 0.0, seed: int = 1) -> list[tuple[float, float]]:
    """5 kg, a hand press then a 100 g item lifted at ~3 s, put back at ~7 s; about 1 g of noise."""
    rng = random.Random(seed)
    rows = []
    t = 0.0
    while t < 10.0:
        g = 5000.0 + rng.gauss(0.0, 1.0)
        if 3.0 <= t < 3.3:
            g += 60.0 + 8.0 * rng.random()  # the hand presses, with tremor
        elif t >= 3.3:
            g -= 100.0
        if t >= 7.0:
            g += 100.0 if t >= 7.1 else 100.0 * (t - 7.0) / 0.1
        rows.append((round(t, 4), round(g, 2)))
        t += (1.0 / rate) * (1.0 + rng.uniform(-jitter, jitter))
    return rows


def _csv(rows: list[tuple[float, float]], header: bool = False, comments: bool = False) -> str:
    lines = ["timestamp_seconds,grams"] if header else []
    if comments:
        lines.append("# recorded on lane 3")
        lines.append("")
    for i, (t, g) in enumerate(rows):
        lines.append(f"{t},{g}" + ("  # mid-trace note" if comments and i == 5 else ""))
    return "\n".join(lines) + "\n"


def _run(capsys: Any, args: list[str]) -> tuple[int, list[dict[str, Any]], str]:
    rc = main(["replay", *args])
    cap = capsys.readouterr()
    return rc, [json.loads(line) for line in cap.out.splitlines()], cap.err


def _file(tmp_path: Path, text: str) -> str:
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return str(p)


def test_pick_and_put_back_with_count(capsys: Any, tmp_path: Path) -> None:
    rc, evs, err = _run(capsys, [_file(tmp_path, _csv(_trace(), header=True)), "--unit-weight", "100"])
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    pick = evs[0]
    assert 2.9 <= pick["t_start"] <= 3.1 and 3.3 < pick["t"] <= 3.8
    assert abs(pick["delta_g"] + 100) < 1.5 and pick["confidence"] >= 0.9
    assert set(pick) == {"t", "t_start", "delta_g", "kind", "confidence", "count", "level_g"}


def test_without_unit_weight_there_is_no_count(capsys: Any, tmp_path: Path) -> None:
    rc, evs, _ = _run(capsys, [_file(tmp_path, _csv(_trace()))])
    assert rc == 0
    assert [e["kind"] for e in evs] == ["pick", "put"]
    assert all("count" not in e for e in evs)


def test_header_comments_and_irregular_rate(capsys: Any, tmp_path: Path) -> None:
    rc, evs, err = _run(
        capsys,
        [_file(tmp_path, _csv(_trace(rate=10.0, jitter=0.3), header=True, comments=True)), "--unit-weight", "100"],
    )
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]


def test_stdin(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _csv(_trace(), header=True).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    rc, evs, _ = _run(capsys, ["-", "--unit-weight", "100"])
    assert rc == 0
    assert [e["count"] for e in evs] == [-1, 1]


def test_both_runtimes_give_the_same_events(capsys: Any, tmp_path: Path, mpy_runtime: Any) -> None:
    path = _file(tmp_path, _csv(_trace(rate=80.0, jitter=0.2, seed=4)))
    rc1, cp, _ = _run(capsys, [path, "--unit-weight", "100", "--runtime", "cpython"])
    rc2, mp, err = _run(capsys, [path, "--unit-weight", "100", "--runtime", "micropython"])
    assert rc1 == rc2 == 0, err
    assert len(cp) == 2
    assert mp == cp


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("100,1\n100.1,abc\n", 2, "weight is not a number"),
        ("100,1\n100.1,nan\n", 2, "not a finite number"),
        ("100,1\ninf,2\n", 2, "timestamp is not a finite number"),
        ("100,1\n95,1\n", 2, "not one clock"),  # 5 s back: two recordings joined, or a column that is not time
        ("# c\n100,1,2\n", 2, "expected 2 comma-separated fields"),
        ("100;1\n", 1, "expected 2 comma-separated fields"),
        ("100,1\n101,1e400\n", 2, "out of range"),
        ("100,1\n101,2000000\n", 2, "out of range"),
        ("timestamp,grams\n", 1, "timestamp is not a number"),  # a header is only allowed first
        ("100,1\n101,\n", 2, "weight is not a number"),
    ],
)
def test_bad_rows_exit_2_naming_the_line(capsys: Any, tmp_path: Path, text: str, line: int, words: str) -> None:
    good = _csv(_trace(), header=True)  # its events would be printed if the bad row were not rejected first
    rc, evs, err = _run(capsys, [_file(tmp_path, good + text), "--unit-weight", "100"])
    assert rc == 2
    assert evs == []
    assert f"line {len(good.splitlines()) + line}:" in err and words in err, err
    assert "Traceback" not in err


# -- real recordings: timestamps that step back, repeat and gap ------------------------------------------


def _lines(rows: list[tuple[float, float]]) -> list[str]:
    return [f"{t},{g}" for t, g in rows]


def _replay_lines(capsys: Any, tmp_path: Path, lines: list[str]) -> tuple[int, list[dict[str, Any]], list[str]]:
    rc, evs, err = _run(capsys, [_file(tmp_path, "\n".join(lines) + "\n"), "--unit-weight", "100"])
    return rc, evs, [line for line in err.splitlines() if line]


def _clean_events(capsys: Any, tmp_path: Path) -> list[dict[str, Any]]:
    rc, evs, err = _replay_lines(capsys, tmp_path, _lines(_trace()))
    assert rc == 0 and err == [], err  # a clean trace: nothing said on stderr
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    return evs


def test_rows_written_out_of_order_are_put_back_in_time_order(capsys: Any, tmp_path: Path) -> None:
    clean = _clean_events(capsys, tmp_path)
    lines = _lines(_trace())
    for i in range(40, 790, 75):  # ten rows written after the next one: their timestamps step back 12.5 ms
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    rc, evs, err = _replay_lines(capsys, tmp_path, lines)
    assert rc == 0, err
    assert evs == clean  # the same samples in the same order as the clean trace
    assert len(err) == 1 and "reordered 10 sample(s)" in err[0] and "window 100 ms" in err[0], err


def test_a_clock_stepping_back_a_few_ms_is_reordered(capsys: Any, tmp_path: Path) -> None:
    rows = _trace()
    # the logger's clock is set back 15.5 ms: the next row is stamped 3 ms before the one above it
    stepped = [(round(t - 0.0155, 4) if t >= 5.0 else t, g) for t, g in rows]
    rc, evs, err = _replay_lines(capsys, tmp_path, _lines(stepped))
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    assert len(err) == 1 and "reordered 1 sample(s)" in err[0] and "up to 3 ms" in err[0], err


def test_exact_duplicate_rows_are_dropped(capsys: Any, tmp_path: Path) -> None:
    clean = _clean_events(capsys, tmp_path)
    lines = _lines(_trace())
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i % 100 == 7:
            out.append(line)  # written twice
        if i % 100 == 57:
            out.append(lines[i - 3])  # a row written again three rows later (a re-sent buffer)
    rc, evs, err = _replay_lines(capsys, tmp_path, out)
    assert rc == 0, err
    assert evs == clean
    assert len(err) == 1 and "dropped 16 exact duplicate row(s)" in err[0], err


def test_a_repeated_timestamp_with_another_weight_is_a_sample(capsys: Any, tmp_path: Path) -> None:
    rows = _trace()
    for i in range(100, 700, 120):  # five samples stamped with the time of the one before
        rows[i + 1] = (rows[i][0], rows[i + 1][1])
    rc, evs, err = _replay_lines(capsys, tmp_path, _lines(rows))
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    assert len(err) == 1 and "kept 5 sample(s) with the same timestamp" in err[0], err


def test_gaps_are_missing_samples(capsys: Any, tmp_path: Path) -> None:
    rows = [(t, g) for t, g in _trace() if not (1.0 <= t < 1.3 or 4.5 <= t < 5.7)]  # 0.3 s and 1.2 s lost
    rc, evs, err = _replay_lines(capsys, tmp_path, _lines(rows))
    assert rc == 0, err
    # the 1.2 s gap is a sensor fault to the detector: the level after it (stable for 1 s) is compared with the
    # one before
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    assert len(err) == 1 and "2 gap(s), longest 1.2" in err[0] and "none made up" in err[0], err
    missing = int(err[0].split("about ")[1].split()[0])
    assert 115 <= missing <= 125, err  # 1.5 s at 80 samples/s


def test_a_sample_too_late_to_reorder_is_dropped(capsys: Any, tmp_path: Path) -> None:
    lines = _lines(_trace())
    late = lines.pop(200)
    lines.insert(230, late)  # written 30 rows (0.375 s) late: beyond the reorder window
    rc, evs, err = _replay_lines(capsys, tmp_path, lines)
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    assert len(err) == 1 and "dropped 1 sample(s) older than the reorder window" in err[0], err


def test_a_messy_recording_reports_one_line_per_kind(capsys: Any, tmp_path: Path) -> None:
    rows = [(t, g) for t, g in _trace(rate=60.0, jitter=0.05, seed=9) if not 1.0 <= t < 1.4]
    rows[300] = (rows[299][0], rows[300][1])
    lines = _lines(rows)
    lines[100], lines[101] = lines[101], lines[100]
    lines.insert(50, lines[49])
    late = lines.pop(400)
    lines.insert(420, late)
    rc, evs, err = _replay_lines(capsys, tmp_path, lines)
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    kinds = ["reordered 1 ", "dropped 1 exact duplicate", "kept 1 sample", "dropped 1 sample", "1 gap(s)"]
    assert len(err) == len(kinds) and all(k in line for k, line in zip(kinds, err, strict=True)), err
    assert all(line.startswith("smartshelf replay: ") for line in err)


def _not_a_trace(capsys: Any, tmp_path: Path, text: str) -> str:
    rc, evs, err = _run(capsys, [_file(tmp_path, text), "--unit-weight", "100"])
    assert rc == 2 and evs == [], err
    assert "Traceback" not in err
    return err


def test_two_recordings_joined_are_not_a_trace(capsys: Any, tmp_path: Path) -> None:
    good = _lines(_trace())
    other = _lines(_trace(seed=2))  # another recording: its clock starts again at 0
    err = _not_a_trace(capsys, tmp_path, "\n".join(good + other) + "\n")
    assert f"line {len(good) + 1}: timestamp 0 is 10 s before" in err and "not one clock" in err, err


def test_the_same_recording_written_twice_is_one_trace(capsys: Any, tmp_path: Path) -> None:
    clean = _clean_events(capsys, tmp_path)
    good = _lines(_trace())
    rc, evs, err = _replay_lines(capsys, tmp_path, good + good)  # a logger that sent its whole buffer again
    assert rc == 0 and evs == clean, err
    assert len(err) == 1 and f"dropped {len(good)} exact duplicate row(s)" in err[0], err


def test_timestamps_running_backwards_are_not_a_trace(capsys: Any, tmp_path: Path) -> None:
    rows = [(round((50 - k) * 0.015, 4), 5000.0 + (k % 3)) for k in range(1, 51)]
    err = _not_a_trace(capsys, tmp_path, "\n".join(_lines(rows)) + "\n")
    # rows 2-7 are within the window of row 1; row 8 on are beyond it: 43 of 50
    assert "line 8: 43 of 50 samples" in err and "not a time-ordered trace" in err, err


def test_a_weight_column_first_is_not_a_trace(capsys: Any, tmp_path: Path) -> None:
    err = _not_a_trace(capsys, tmp_path, "\n".join(f"{g},{t}" for t, g in _trace()) + "\n")
    assert "not one clock" in err or "not a time-ordered trace" in err, err


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "no samples"),
        ("timestamp_seconds,grams\n# nothing recorded\n", 2, "no samples"),
        ('{"t": [0, 1], "g": [5000, 5001]}\n', 1, "expected 2 comma-separated fields"),
        ("PK\x03\x04,spreadsheet\n\x01\x02,zz\n", 2, "timestamp is not a number"),  # the first row: a header
    ],
)
def test_other_files_are_not_a_trace(capsys: Any, tmp_path: Path, text: str, line: int, words: str) -> None:
    err = _not_a_trace(capsys, tmp_path, text)
    assert f"line {line}: {words}" in err, err


@pytest.mark.parametrize("tail", ["100.3", "100.3,", "100.3,5e", "100.", "100.3,5\xc3"])
def test_a_last_row_cut_short_is_dropped_with_a_warning(capsys: Any, tmp_path: Path, tail: str) -> None:
    """A logger that lost power mid-row leaves a last row with no end of line: dropped and said, the rest replayed."""
    good = _csv(_trace(), header=True)
    path = tmp_path / "cut.csv"
    path.write_bytes(good.encode() + tail.encode("latin-1"))
    rc, evs, err = _run(capsys, [str(path), "--unit-weight", "100"])
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    line = len(good.splitlines()) + 1
    assert f"dropped line {line}: the last row was cut short" in err, err


@pytest.mark.parametrize("tail", ["10.5,50", "10.5,4999.61", "1e1,5", "10.5,5000.2  # a no"])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_a_last_row_without_its_end_of_line_is_dropped_even_when_it_reads_as_a_sample(
    capsys: Any, tmp_path: Path, tail: str, eol: str
) -> None:
    """Power lost mid-row can leave a number cut short that still reads as one (``10.5,50`` of ``10.5,5000.43``):
    a last row with no end of line after rows that have one is dropped and said, never replayed as a sample."""
    from tools import replay

    good = _csv(_trace(), header=True).replace("\n", eol)
    path = tmp_path / "cut.csv"
    path.write_bytes((good + tail).encode())
    rc, evs, err = _run(capsys, [str(path), "--unit-weight", "100"])
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    line = len(good.splitlines()) + 1
    assert f"dropped line {line}: the last row was cut short" in err, err
    with path.open("rb") as f:
        trace = replay.parse(f)
    assert len(trace.t_ms) == len(_trace()) and trace.seconds[-1] == _trace()[-1][0]
    assert trace.cleanup.cut_short_line == line
    with path.open("rb") as f:
        whole = replay.parse(f.read().splitlines(keepends=True)[:-1])  # the same file without the cut row
    assert (whole.t_ms, whole.w_dg) == (trace.t_ms, trace.w_dg) and whole.cleanup.cut_short_line == 0


def test_a_last_row_without_end_of_line_is_kept_when_no_row_has_one(capsys: Any, tmp_path: Path) -> None:
    """A file of one row without an end of line, or lines given without theirs (``str.splitlines``): nothing tells a
    cut row apart from a file written without a final newline, so the row is taken as written."""
    from tools import replay

    rc, evs, err = _run(capsys, [_file(tmp_path, "10.5,5000.43"), "--unit-weight", "100"])
    assert (rc, evs, err) == (0, [], "")
    one = replay.parse([b"10.5,5000.43"])
    assert (one.t_ms, one.w_dg, one.cleanup.cut_short_line) == ([10500], [50004], 0)
    rows = replay.parse(_csv(_trace(), header=True).splitlines())
    assert len(rows.t_ms) == len(_trace()) and rows.cleanup.cut_short_line == 0
    with_header = replay.parse([b"timestamp_seconds,grams\n", b"10.5,5000.43\n", b"10.6,50"])  # rows have theirs
    assert (with_header.t_ms, with_header.cleanup.cut_short_line) == ([10500], 3)


def test_a_bad_last_row_with_its_end_of_line_is_still_not_a_trace(capsys: Any, tmp_path: Path) -> None:
    good = _csv(_trace(), header=True)
    rc, evs, err = _run(capsys, [_file(tmp_path, good + "100.3,\n"), "--unit-weight", "100"])
    assert rc == 2 and evs == []
    assert f"line {len(good.splitlines()) + 1}: weight is not a number" in err, err


def test_a_cut_short_row_that_is_not_last_is_not_a_trace(capsys: Any, tmp_path: Path) -> None:
    good = _csv(_trace(), header=True)
    rc, _evs, err = _run(capsys, [_file(tmp_path, good + "100.3\n200,5\n"), "--unit-weight", "100"])
    assert rc == 2 and "expected 2 comma-separated fields" in err, err


# -- the recorded-trace corpus (tools/sensing/recorded.py) ---------------------------------------------------


def test_a_corpus_recording_is_reproducible_and_written_as_a_logger_writes() -> None:
    from tools import replay
    from tools.sensing.recorded import make_recording

    rec = make_recording(2, 3)
    assert rec.csv == make_recording(2, 3).csv  # seeded: the same file every time, nothing stored
    assert len(rec.csv) < 200_000 and 2 <= rec.plates <= 6
    cu = replay.parse(rec.csv.splitlines()).cleanup
    assert cu.reordered and cu.duplicates and cu.same_time and cu.gaps, cu
    assert 16.0 < 1000 * cu.interval_s < 17.5  # 60 Hz


def test_corpus_recordings_through_the_replay_command(capsys: Any, tmp_path: Path) -> None:
    from tools.sensing.recorded import make_recording

    rec = make_recording(2, 4)  # held out: 8 changes, 3 of them picks during a bump or with a hand resting
    path = _file(tmp_path, rec.csv)
    rc, evs, err = _run(capsys, [path, "--unit-weight", f"{rec.unit_g:g}", "--spread", f"{100 * rec.spread:g}"])
    assert rc == 0, err
    assert [e["count"] for e in evs] == [e.count for e in rec.truth.events]
    assert all(e["kind"] == ("pick" if e["count"] < 0 else "put") for e in evs)
    lines = err.splitlines()
    assert lines[0].endswith("(window 100 ms)") and "exact duplicate" in lines[1] and "gap(s)" in lines[-1], err


def test_corpus_picks_during_disturbances_count_once_and_bumps_fire_nothing() -> None:
    from tools.sensing.recorded import CorpusStats, make_recording, replay_recording

    cs = CorpusStats()
    for i in range(8):
        cs.add(replay_recording(make_recording(2, i)))
    assert cs.disturbed >= 20 and cs.disturbed_exact == cs.disturbed and cs.disturbed_split == 0
    assert cs.quiet >= 15 and cs.quiet_events == 0
    assert cs.stats.fp == 0 and cs.stats.exact == cs.stats.truths


def test_undecodable_bytes_and_missing_file(capsys: Any, tmp_path: Path) -> None:
    p = tmp_path / "bin.csv"
    p.write_bytes(b"0,1\n\xff\xfe,2\n")
    rc, evs, err = _run(capsys, [str(p)])
    assert rc == 2 and evs == [] and "line 2: not UTF-8" in err
    rc, evs, err = _run(capsys, [str(tmp_path / "missing.csv")])
    assert rc == 2 and "cannot read" in err


def test_the_installed_command_never_prints_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(b"0,1\n1,2\n\x00\x01garbage,,,\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hub.cli", "replay", str(p)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "line 3:" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_sensing_quick_prints_the_figures(capsys: Any, mpy_runtime: Any) -> None:
    assert main(["bench", "sensing", "--quick", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for words in ("precision", "recall", "exact count", "latency p50", "p90", "p99", "idle 1 h", "by case", "sigma"):
        assert words in out, out
    assert "events identical to CPython's" in out, out
    for words in ("recorded-trace corpus", "held out (seed 2)", "counted exactly, once", "confidence calibration",
                  "fitted on seeds", "held out: seeds", "reported  measured"):  # fmt: skip
        assert words in out, out
