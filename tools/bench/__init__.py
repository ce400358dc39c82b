"""Benchmarks behind `smartshelf bench ...`: each prints figures measured side by side in one run."""

import os
import platform


def host_figures() -> dict[str, object]:
    """Where the figures were measured: the host, Python and the CPU count, for every benchmark's report."""
    return {"host": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
