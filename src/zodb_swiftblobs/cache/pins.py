"""Pins: a cached file handed out stays until its caller has opened it.

``loadBlob`` returns a path, and its caller opens it at once (ZODB) or
later: a ZEO server queues the file behind what the client's connection is
still sending, and opens it only when its turn comes.  Until then no
eviction, in any process sharing the cache, may remove it.  A pin is a
shared ``flock`` on the file, held through a descriptor of this process (see
:func:`.entries.open_pinned`); eviction spares flocked files.

A pin lasts until each caller it was handed out to has opened the file: an
audit hook (:pep:`578`) sees each ``open()`` of the path in this process.
Then it goes when the thread that opened it last hands out its next path
(its ``open()`` has returned by then), or :data:`RELEASE_AFTER_OPEN` seconds
after that open, whichever comes first; once open, the file stays readable
whatever eviction does.  The cache's own opens (``os.open``) do not count.

A path never opened keeps its pin for :data:`PIN_LIMIT` seconds, and a
process holds at most :data:`PINS_PER_PROCESS` pins (the oldest go first).
But ZODB asks for a path each time it loads a blob object, whether or not
the blob is read then (it reads through ``openCommittedBlobFile``, which asks
again), so in a process serving a ZODB database most paths handed out are
never opened: there (:meth:`Pins.limit_unopened`) a path not opened is
released when the thread it was handed to hands out its next one.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import threading
import time
import weakref

PIN_LIMIT = 300.0  # a file handed out and not opened stays pinned that long
PINS_PER_PROCESS = 128  # beyond this many, the oldest pin goes
RELEASE_AFTER_OPEN = 5.0  # an opened file's pin goes this long after the open, at the latest

_watched: weakref.WeakSet[Pins] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_installed = False


@dataclasses.dataclass
class _Pin:
    descriptor: int
    pinned_at: float = 0.0
    pinned_by: int = 0  # the thread that pinned it last
    awaited: int = 0  # opens still awaited: the handouts not yet matched by one
    opened_at: float | None = None  # the latest open since the latest pinning
    openers: set[int] = dataclasses.field(default_factory=set)

    @property
    def unopened(self) -> bool:
        return self.awaited > 0 or self.opened_at is None

    def due(self, now: float, thread: int, unopened_limited: bool) -> bool:
        """Whether the pin may go, as *thread* pins another file (0: none does)."""
        if now - self.pinned_at >= PIN_LIMIT:
            return True
        if self.unopened:
            return unopened_limited and self.pinned_by == thread
        return self.openers == {thread} or now - self.opened_at >= RELEASE_AFTER_OPEN


class Pins:
    """The cached files this process has handed out, pinned until opened."""

    def __init__(self) -> None:
        self.unopened_limited = False
        self._held: collections.OrderedDict[str, _Pin] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._reaper: threading.Thread | None = None
        _watch(self)

    def keep(self, path: str, descriptor: int, *, handed_out: bool) -> None:
        """Keep the pin *descriptor* (a shared flock on the file at *path*)
        until the file is opened: by a caller it is *handed_out* to, else by
        this thread right away.  Release the pins that are due."""
        now, thread = time.monotonic(), threading.get_ident()
        with self._lock:
            pin = self._held.pop(path, None)
            if pin is None:
                pin = _Pin(descriptor)
            else:
                os.close(descriptor)  # the pin held already serves
            pin.pinned_at, pin.pinned_by, pin.opened_at, pin.openers = now, thread, None, set()
            pin.awaited += handed_out
            self._release_due(now, thread)
            self._held[path] = pin
            while len(self._held) > PINS_PER_PROCESS:
                self._release(next(iter(self._held)))
            self._start_reaper()

    def opened(self, path: str) -> None:
        """The audit hook: the current thread is opening *path*."""
        pin = self._held.get(path)
        if pin is not None:
            pin.awaited = max(0, pin.awaited - 1)
            pin.openers.add(threading.get_ident())
            pin.opened_at = time.monotonic()

    def limit_unopened(self) -> None:
        """From now on, release a pin not opened when the thread it was
        handed to pins another file."""
        self.unopened_limited = True

    def release_all(self) -> None:
        with self._lock:
            while self._held:
                self._release(next(iter(self._held)))
            self._wake.set()

    def _release_due(self, now: float, thread: int) -> None:
        for path in [path for path, pin in self._held.items()
                     if pin.due(now, thread, self.unopened_limited)]:
            self._release(path)

    def _release(self, path: str) -> None:
        os.close(self._held.pop(path).descriptor)

    def _start_reaper(self) -> None:
        """Pins of a process that hands out nothing more still go when due:
        a thread releases them, while there are any."""
        if self._reaper is None:
            self._wake.clear()
            self._reaper = threading.Thread(target=self._reap, daemon=True,
                                            name="blob cache pins")
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            self._wake.wait(max(RELEASE_AFTER_OPEN, 1.0))
            with self._lock:
                self._wake.clear()
                self._release_due(time.monotonic(), 0)
                if not self._held:
                    self._reaper = None
                    return


def _watch(pins: Pins) -> None:
    global _hook_installed
    with _hook_lock:
        _watched.add(pins)
        if not _hook_installed:
            sys.addaudithook(_notice_open)
            _hook_installed = True


def _notice_open(event: str, arguments: tuple) -> None:
    """Audit hook: an ``open()`` (mode given: not the cache's own ``os.open``)."""
    if event != "open" or arguments[1] is None:
        return
    try:
        path = os.fspath(arguments[0])
        for pins in list(_watched):
            pins.opened(path)
    except Exception:  # an audit hook must never fail the open it watches
        pass
