"""``Operation``: a writer's method that runs one ``Tx`` method as its own transaction, with that method's signature.

In ``LedgerService``'s class body, ``record_sale = Operation(Tx.sale)`` makes ``await ledger.record_sale(sku, qty,
...)`` the same as ``await ledger.transact(lambda tx: tx.sale(sku, qty, ...))``: queued behind the work already
submitted, its result returned after COMMIT, or what it raised re-raised with nothing written. The signature is the
``Tx`` method's without ``tx`` (``ParamSpec``), so mypy checks every call's arguments and a posting's parameters are
written down once, where the posting is.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, Self, TypeVar, overload

from hub.ledger.postings import Tx

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Transacting(Protocol):
    """What an ``Operation`` runs on: the writer's ``transact``."""

    async def transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T: ...


class Operation(Generic[P, R]):
    def __init__(self, method: Callable[Concatenate[Tx, P], Awaitable[R]]) -> None:
        self._method = method
        self._name = method.__name__
        self.__doc__ = method.__doc__
        sig = inspect.signature(method)
        self.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, service: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, service: Transacting, owner: type[Any] | None = None) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(
        self, service: Transacting | None, owner: type[Any] | None = None
    ) -> Self | Callable[P, Coroutine[Any, Any, R]]:
        if service is None:
            return self
        method = self._method

        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            return await service.transact(lambda tx: method(tx, *args, **kwargs))

        run.__name__ = self._name
        run.__qualname__ = f"{type(service).__qualname__}.{self._name}"
        run.__doc__ = self.__doc__
        run.__signature__ = self.__signature__  # type: ignore[attr-defined]
        vars(service)[self._name] = run  # built once per service: later lookups are plain attribute reads
        return run
