"""The checks every posting shares: who (actor), how many (qty), under which client id (ref), and whose id it is."""

from __future__ import annotations

import uuid

from hub.ledger.models import MAX_QTY, InvalidArgument

REF_MAX = 64
# The source reference kind of the physical count an alert resolution posts (``resolution:alert<id>``): no API,
# CSV or Python client call produces it, so a client's id can never pre-empt (or turn into a no-op) a resolution.
RESOLUTION_KIND = "resolution"


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 64:
        raise InvalidArgument("actor must be a non-empty name of at most 64 characters")
    return actor.strip()


def check_qty(qty: int, what: str = "quantity") -> int:
    if not isinstance(qty, int) or isinstance(qty, bool):
        raise InvalidArgument(f"{what} must be an integer, not {qty!r}")
    if qty <= 0:
        raise InvalidArgument(f"{what} must be positive, not {qty}")
    if qty > MAX_QTY:
        raise InvalidArgument(f"{what} {qty} is larger than {MAX_QTY:,}")
    return qty


def check_ref(ref: str | None) -> str:
    """A client id (from a POS line, a file row, a web form's idempotency key); generated when None."""
    if ref is None:
        return uuid.uuid4().hex
    if not isinstance(ref, str) or not (1 <= len(ref) <= REF_MAX) or ref != ref.strip() or not ref.isprintable():
        raise InvalidArgument(f"id {ref!r} must be 1..{REF_MAX} printable characters without surrounding spaces")
    return ref


def foreign(existing_actor: str, actor: str) -> bool:
    """Is a reference of ``existing_actor`` out of ``actor``'s reach? Each API client (``api:<name>``) has its own
    ids: two tills each sending their line ``1`` must not meet. Staff, the CLI and the hub itself share the store's
    references, so a file re-imported by another person is still a duplicate."""
    return existing_actor != actor and (existing_actor.startswith("api:") or actor.startswith("api:"))


def used_by(source_ref: str, other_actor: str) -> str:
    """Another actor's reference: named, its content never shown (client ids are scoped per actor)."""
    return f"{source_ref} was already used by {other_actor}: use ids unique to this client"
