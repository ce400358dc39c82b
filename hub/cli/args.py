"""Command-line number arguments: parse, check a range, and say what is wrong in one line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def number(
    convert: Callable[[str], N], ok: Callable[[N], bool], out_of_range: str, what: str = "a number"
) -> Callable[[str], N]:
    """An argparse ``type=``: ``convert`` the text (``int`` or ``float``), then require ``ok(value)``."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(out_of_range)
        return value

    return parse
