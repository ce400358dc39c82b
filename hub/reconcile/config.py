"""Reconciliation settings (``ReconcileConfig``); every time is in seconds, every weight in tenths of a gram."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    # Matching sensor picks to sales and order picks (per SKU, any lane of it).
    window_s: float = 900.0  # a sale / order pick explains picks made up to this long before it
    lead_s: float = 120.0  # ... and up to this long after it (clock skew; an order pick confirmed first)
    grace_s: float = 300.0  # wait this long after the window for late POS / WMS data before a pick is unexplained
    putback_s: float = 600.0  # a put on the same lane this soon after a pick may be a put-back
    min_confidence: int = 60  # an unexplained pick below this is "uncertain", not shrinkage (see drift)

    # Weight checks: a change fits n units of a SKU when |weight - n * unit| <= tolerance(n), where
    # tolerance(n) = abs_tol_dg + rel_tol_permille/1000 * n * unit + spread_k * sigma * sqrt(n), sigma being the
    # SKU's unit-weight spread (1 sigma, spread_permille).
    abs_tol_dg: int = 30  # 3 g: difference of two stable means, plus creep over one event
    rel_tol_permille: int = 10  # 1 %: scale (calibration) error
    spread_k: float = 3.0
    min_change_dg: int = 50  # smaller weight changes without a count are noise, not damage or a misplaced item

    # Sensor health.
    silent_s: float = 600.0  # a node not heard from for this long is silent
    stuck_s: float = 3600.0  # a lane with no event this long while its SKU sells unseen is stuck ...
    stuck_min_units: int = 3  # ... once at least this many settled sale units of the SKU went unseen
    drift_s: float = 3600.0  # period over which low-confidence and anomaly events are counted per lane
    drift_min_events: int = 5  # this many in drift_s: the lane is drifting (cleared below half of it)
    # A lane's latest reading flags it uncalibrated, faulty or overloaded (lane_flags.py): alerted while the reading is
    # at most this old; 3900 s = a stored reading per 5 min of a quiet lane + the longest lane_state_s (3600 s).
    lane_flags_max_age_s: float = 3900.0

    # RFID beside the weight (hub/reconcile/README.md, "Tags and weight"). Tag times come from the node's clock like
    # weight events' (age_ms), so a window of some seconds each side absorbs the delays between the two.
    tag_window_s: float = 20.0  # a weight step this close to a tag's departure (either side) is the same movement
    tag_return_s: float = 60.0  # a tag read on its lane again this soon after leaving never left (a missed read)
    tag_late_s: float = 1800.0  # a tag leaving this long after a pick that took no tag is named on that pick
    misplaced_grace_s: float = 120.0  # a tag of another SKU this long on a lane is misplaced (a passing hand is not)
    tag_reseen_s: float = 300.0  # after a node restart: a tag not read again once its readers worked this long is gone

    # Running.
    interval_s: float = 60.0
    evidence_items_max: int = 100  # events listed in one alert's evidence (totals always complete)
    actor: str = "reconcile"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "actor":
                if not isinstance(value, str) or not value.strip():
                    raise ValueError("reconcile actor must be a non-empty name")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"reconcile {f.name} must be a number, not {value!r}")
            if value < 0:
                raise ValueError(f"reconcile {f.name} cannot be negative ({value})")
        if self.interval_s <= 0 or self.window_s <= 0:
            raise ValueError("reconcile interval_s and window_s must be positive")
        if not 0 <= self.min_confidence <= 101:
            raise ValueError("reconcile min_confidence must be 0..101")
        if self.evidence_items_max < 1 or self.drift_min_events < 1 or self.stuck_min_units < 1:
            raise ValueError("reconcile evidence_items_max, drift_min_events and stuck_min_units must be >= 1")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ReconcileConfig:
        """From a config section (e.g. ``[reconcile]`` of the hub's config file); unknown keys are refused."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown reconcile setting(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            default = getattr(cls(), key)
            if isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"reconcile {key} must be a whole number, not {value!r}")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"reconcile {key} must be a number, not {value!r}")
                value = float(value)
            kwargs[key] = value
        return cls(**kwargs)

    # ------------------------------------------------------------------------------------------ in milliseconds

    @property
    def window_ms(self) -> int:
        return round(self.window_s * 1000)

    @property
    def lead_ms(self) -> int:
        return round(self.lead_s * 1000)

    @property
    def settle_ms(self) -> int:
        """A pick is settled (its matches final) this long after it was made."""
        return round((self.window_s + self.grace_s) * 1000)

    @property
    def putback_ms(self) -> int:
        return round(self.putback_s * 1000)

    @property
    def tag_window_ms(self) -> int:
        return round(self.tag_window_s * 1000)

    def ms(self, name: str) -> int:
        """A setting in seconds (``tag_return_s``, ...) in milliseconds."""
        return round(float(getattr(self, name)) * 1000)
