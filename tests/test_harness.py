"""The MicroPython harness itself: real runtime, tracebacks, isolation, hangs, missing pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tools.mpy_runtime as mpy_runtime
from tools.mpy_runtime import MicroPythonError, MicroPythonRuntime, MicroPythonUnavailable


def test_runs_real_micropython(mpy: Any) -> None:
    impl = mpy.exec("import sys\nresult = [sys.implementation.name, list(sys.implementation.version)[:2]]")
    assert impl == ["micropython", [1, 27]]


def test_project_packages_are_importable_like_on_a_node(mpy: Any) -> None:
    assert mpy.exec("import shared_protocol, firmware\nresult = shared_protocol.PROTOCOL_VERSION") == 1


def test_traceback_comes_back_with_micropython_file_and_line(mpy: Any) -> None:
    with pytest.raises(MicroPythonError) as info:
        mpy.exec("from shared_protocol.messages import Event\nEvent(1, 0, 9, 0, 0, 0, 0).encode_payload()")
    assert info.value.exc_type == "ProtocolError"
    assert "/lib/shared_protocol/messages.py" in info.value.traceback
    assert "kind=9 outside 1..4" in info.value.traceback


def test_each_call_gets_a_fresh_interpreter(mpy: Any) -> None:
    mpy.exec("import shared_protocol\nshared_protocol.leak = 1\nresult = 1")
    assert mpy.exec("import shared_protocol\nresult = hasattr(shared_protocol, 'leak')") is False


def test_top_level_await_and_stdout(mpy_runtime: MicroPythonRuntime) -> None:
    got = mpy_runtime.exec("import asyncio\nawait asyncio.sleep_ms(1)\nprint('hello')\nresult = 3")
    assert got == 3
    assert mpy_runtime.last_stdout == "hello\n"


def test_a_hang_times_out_and_the_runtime_recovers() -> None:
    with MicroPythonRuntime(packages=()) as rt:
        with pytest.raises(TimeoutError):
            rt.exec("while True:\n    pass", timeout_s=1.5)
        assert rt.exec("result = 6 * 7") == 42


def test_missing_npm_package_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mpy_runtime, "REPO_ROOT", tmp_path)
    with pytest.raises(MicroPythonUnavailable, match="npm ci"):
        MicroPythonRuntime(packages=()).start()


def test_missing_node_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mpy_runtime.shutil, "which", lambda _name: None)
    with pytest.raises(MicroPythonUnavailable, match=r"Node\.js"):
        MicroPythonRuntime(packages=()).start()


def test_runtime_param_covers_both(runtime: Any) -> None:
    assert runtime.call("tests.portable.firmware_cases", "implementation") == runtime.name


def test_code_runs_at_top_level_as_written(mpy: Any) -> None:
    # Triple-quoted strings keep their exact lines, and names are module globals (visible in functions).
    code = 'TEXT = """a\n  b\nc"""\n\ndef f():\n    return TEXT.split("\\n")\n\nresult = f()\n'
    assert mpy.exec(code) == ["a", "  b", "c"]


def test_unserialisable_result_is_a_clear_error(mpy: Any) -> None:
    with pytest.raises(MicroPythonError) as info:
        mpy.exec("result = object()")
    assert info.value.exc_type == "TypeError"
