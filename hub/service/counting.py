"""What a staff count of a lane came to (``HubService.set_count``, protocol v1.1 ``set_count``): the node's answer and
the physical count booked on the lane's book stock, and the one line the CLI and the shelf page show for it."""

from __future__ import annotations

from dataclasses import dataclass

from hub.ledger.models import CountResult
from hub.link.commands import CommandOutcome


@dataclass(frozen=True, slots=True)
class SetCountOutcome:
    """``command``: the node's answer; ``count``: the physical count booked on the lane's book stock (None unless
    the node took the count); ``absorbed``: the staff corrections of the lane's sensor movements the count absorbed
    (``Tx.rebase_lane``)."""

    command: CommandOutcome
    lane_id: str
    sku: str
    count: CountResult | None
    absorbed: int = 0

    def summary(self) -> str:
        """One line for staff (the CLI, the shelf page)."""
        where = f"lane {self.lane_id} ({self.sku})"
        if self.count is None:
            why = self.command.status_name
            hint = (
                " (units moving on the lane, or its node's outbox full: try again in a moment)" if why == "busy" else ""
            )
            return f"{where}: the node answered {why}{hint}: nothing booked"
        book, counted = self.count.book_qty, self.count.counted_qty
        diff = f"adjusted {counted - book:+d}" if counted != book else "agreed with the book"
        fixed = f"; corrections of its sensor movements absorbed ({-self.absorbed:+d})" if self.absorbed else ""
        return f"{where}: counted {counted}, book {book}: {diff} ({self.count.source_ref}){fixed}"
