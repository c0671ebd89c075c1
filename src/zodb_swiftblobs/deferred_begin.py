"""A base storage's ``tpc_begin``, delayed until the transaction's vote.

FileStorage, MappingStorage and DemoStorage take their commit lock, and
choose the transaction id, in ``tpc_begin``.  So that a transaction does
not hold that lock while its big blobs upload, the wrapper begins such a
base only at the vote, as ZEO's server does: the calls the transaction
makes before (``store``, ``restore``, ``checkCurrentSerialInTransaction``,
``deleteObject``) are logged and replayed then, in order.  Errors those
calls raise (a ConflictError, say) therefore come from the vote, as they do
through ZEO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

LOGGED_CALLS = ("store", "restore", "checkCurrentSerialInTransaction", "deleteObject")


class DeferredBegin:
    """The ``tpc_begin`` of *transaction* in *base*, made by :meth:`begin`,
    and the calls logged until then."""

    def __init__(self, base: Any, transaction: Any) -> None:
        self.base = base
        self.transaction = transaction
        self.begun = False
        self._log: list[tuple[str, tuple]] = []

    def call(self, method: str, *args: Any) -> None:
        """Call *method* (one of LOGGED_CALLS) of the base with *args*, or log
        it until :meth:`begin`."""
        if self.begun:
            getattr(self.base, method)(*args)
        else:
            self._log.append((method, args))

    def begin(self) -> None:
        """Begin the transaction in the base (this waits for its commit lock)
        and replay the logged calls; nothing when begun already."""
        if self.begun:
            return
        self.base.tpc_begin(self.transaction)
        self.begun = True
        log, self._log = self._log, []
        for method, args in log:
            getattr(self.base, method)(*args)


def through_deferred_begin(base: Any, method: str,
                           commits: Mapping[Any, Any]) -> Callable[..., None]:
    """*base*'s *method* (one of LOGGED_CALLS; its last argument is the
    transaction), called through the transaction's :class:`DeferredBegin`
    when its commit in *commits* (by transaction) has one (``begin``)."""
    call = getattr(base, method)

    def transactional(*args: Any) -> None:
        commit = commits.get(args[-1])
        if commit is not None and commit.begin is not None:
            commit.begin.call(method, *args)
        else:
            call(*args)
    transactional.__name__ = method
    return transactional
