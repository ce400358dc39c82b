"""The hub process's collector settings (hub.service.heap), applied in a child process so the test run's own
collector is left alone."""

from __future__ import annotations

import json
import subprocess
import sys

from hub.service import heap


def test_settle_freezes_what_exists_and_raises_the_young_threshold() -> None:
    code = (
        "import gc, json\n"
        "from hub.service import heap\n"
        "before = gc.get_freeze_count()\n"
        "kept = [[i] for i in range(1000)]\n"  # containers alive at start-up: frozen with the rest
        "heap.settle()\n"
        "young_after = gc.get_count()[0]\n"
        "print(json.dumps([before, gc.get_freeze_count(), list(gc.get_threshold()), young_after]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    before, frozen, threshold, young = json.loads(out.stdout)
    assert before == 0
    assert frozen >= 1000  # at least the list's containers, plus everything imports built
    assert threshold == [heap.YOUNG, heap.OLDER, heap.OLDER]
    assert young < heap.YOUNG


def test_settled_puts_the_collector_back_as_it_was() -> None:
    code = (
        "import gc, json\n"
        "from hub.service import heap\n"
        "before = gc.get_threshold()\n"
        "with heap.settled():\n"
        "    inside = [gc.get_threshold(), gc.get_freeze_count() > 0]\n"
        "print(json.dumps([list(before), inside, list(gc.get_threshold()), gc.get_freeze_count()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    before, inside, after, frozen = json.loads(out.stdout)
    assert inside == [[heap.YOUNG, heap.OLDER, heap.OLDER], True]
    assert after == before and frozen == 0
