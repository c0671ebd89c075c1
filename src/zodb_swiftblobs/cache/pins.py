"""Pins: a cached file handed out stays until its caller has opened it.

``loadBlob`` returns a path, and its caller opens it at once (ZODB) or
later: a ZEO server queues the file behind what the client's connection is
still sending, and opens it only when its turn comes.  Until then no
eviction, in any process sharing the cache, may remove it.  A pin is a
shared ``flock`` on the file, held through a descriptor of this process (see
:func:`.entries.open_pinned`); eviction spares flocked files.

Each handout of a path awaits one open: an audit hook (:pep:`578`) sees each
``open()`` of the path in this process, and matches it with the oldest
handout to the opening thread, else the oldest handout to a caller.  Once
none is awaited the pin goes, when the threads that opened it hand out their
next path (their ``open()`` has returned by then) or :data:`RELEASE_AFTER_OPEN`
seconds later; once open, the file stays readable whatever eviction does.
The cache's own opens (``os.open``) do not count.

A handout for this thread's own immediate open (``openCommittedBlobFile``)
is dropped when the thread hands out its next path.  When
:attr:`Pins.wait_for_open` is false (a process with a ZODB database, which
asks for the path of every blob object it loads and seldom opens it), every
handout not opened is.  Otherwise (a ZEO server) a handout waits for its open
for :data:`PIN_LIMIT` seconds, and a process holds at most
:data:`PINS_PER_PROCESS` pins (the oldest go first).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import resource
import sys
import threading
import time
import weakref

PIN_LIMIT = 3600.0  # a handout waits that long for its open
RELEASE_AFTER_OPEN = 5.0  # an opened file's pin goes this long after the open, at the latest
PINS_PER_PROCESS = max(64, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4)
HANDOUTS_PER_PIN = 256  # a pin awaits at most this many opens (the oldest go first)

_watched: weakref.WeakSet[Pins] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_installed = False


@dataclasses.dataclass
class _Handout:
    thread: int
    at: float
    to_caller: bool  # else for this thread's own immediate open


@dataclasses.dataclass
class _Pin:
    descriptor: int
    identity: tuple[int, int]  # the pinned file's device and inode
    waiting: list[_Handout] = dataclasses.field(default_factory=list)
    openers: set[int] = dataclasses.field(default_factory=set)  # since it last waited
    settled_at: float = 0.0  # when its last awaited open came


class Pins:
    """The cached files this process has handed out, pinned until opened."""

    def __init__(self) -> None:
        self.wait_for_open = True
        self._held: collections.OrderedDict[str, _Pin] = collections.OrderedDict()
        self._settled: set[str] = set()  # pins awaiting no open
        # (thread, to a caller) -> the paths with such handouts awaiting their open
        self._awaiting: dict[tuple[int, bool], set[str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._reaper: threading.Thread | None = None
        _watch(self)

    def keep(self, path: str, descriptor: int, status: os.stat_result, *,
             handed_out: bool) -> None:
        """Keep the pin *descriptor* (a shared flock on the file at *path*, of
        *status*) until the file is opened: by a caller it is *handed_out* to,
        else by this thread right away.  Release the pins that are due."""
        now, thread = time.monotonic(), threading.get_ident()
        with self._lock:
            self._release_due_for(thread, now)
            pin = self._held.get(path)
            if pin is None or pin.identity != (status.st_dev, status.st_ino):
                if pin is not None:  # a file since replaced (fetched again)
                    os.close(pin.descriptor)
                    pin.descriptor, pin.identity = descriptor, (status.st_dev, status.st_ino)
                else:
                    pin = self._held[path] = _Pin(descriptor, (status.st_dev, status.st_ino))
            else:
                os.close(descriptor)  # the pin held already serves
            self._held.move_to_end(path)
            if not pin.waiting:
                pin.openers = set()  # it awaits opens again
            if len(pin.waiting) >= HANDOUTS_PER_PIN:
                self._forget(path, pin, pin.waiting[0])
            pin.waiting.append(_Handout(thread, now, handed_out))
            self._settled.discard(path)
            self._awaiting.setdefault((thread, handed_out), set()).add(path)
            while len(self._held) > PINS_PER_PROCESS:
                self._release(next(iter(self._held)))
            self._start_reaper()

    def opened(self, path: str) -> None:
        """The audit hook: the current thread is opening *path*."""
        if path not in self._held:
            return
        thread = threading.get_ident()
        with self._lock:
            pin = self._held.get(path)
            if pin is None:
                return
            handout = next((h for h in pin.waiting if h.thread == thread), None) or \
                next((h for h in pin.waiting if h.to_caller), None)
            if handout is None:
                return
            self._forget(path, pin, handout)
            pin.openers.add(thread)
            if not pin.waiting:
                self._settle_or_release(path, pin, time.monotonic())

    def release_all(self) -> None:
        with self._lock:
            while self._held:
                self._release(next(iter(self._held)))
            self._wake.set()

    def forget_in_child(self) -> None:
        """After a fork: the child holds none of its parent's pins."""
        for pin in self._held.values():
            os.close(pin.descriptor)
        self._held.clear()
        self._settled.clear()
        self._awaiting.clear()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._reaper = None

    def _release_due_for(self, thread: int, now: float) -> None:
        """As *thread* hands out another path: drop its handouts that will not
        be opened now, and release the pins that are due."""
        kinds = [False] if self.wait_for_open else [False, True]
        for to_caller in kinds:
            for path in list(self._awaiting.get((thread, to_caller), ())):
                pin = self._held[path]
                for handout in [h for h in pin.waiting
                                if h.thread == thread and h.to_caller == to_caller]:
                    self._forget(path, pin, handout)
                if not pin.waiting:
                    self._settle_or_release(path, pin, now)
        for path in [path for path in self._settled if self._held[path].openers == {thread}
                     or now - self._held[path].settled_at >= RELEASE_AFTER_OPEN]:
            self._release(path)

    def _settle_or_release(self, path: str, pin: _Pin, now: float) -> None:
        """*pin* awaits no more opens: release it if none came, else let it
        settle (it goes once its openers are done)."""
        if not pin.openers:
            self._release(path)  # none of its handouts was opened
        else:
            pin.settled_at = now
            self._settled.add(path)

    def _expire(self, now: float) -> None:
        """Release what is due by time alone: handouts older than
        :data:`PIN_LIMIT`, and pins opened :data:`RELEASE_AFTER_OPEN` ago."""
        for path, pin in list(self._held.items()):
            for handout in [h for h in pin.waiting if now - h.at >= PIN_LIMIT]:
                self._forget(path, pin, handout)
            if pin.waiting:
                continue
            if path not in self._settled:
                self._settle_or_release(path, pin, now)
            elif now - pin.settled_at >= RELEASE_AFTER_OPEN:
                self._release(path)

    def _forget(self, path: str, pin: _Pin, handout: _Handout) -> None:
        pin.waiting.remove(handout)
        kind = (handout.thread, handout.to_caller)
        if not any((h.thread, h.to_caller) == kind for h in pin.waiting):
            paths = self._awaiting.get(kind)
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del self._awaiting[kind]

    def _release(self, path: str) -> None:
        pin = self._held.pop(path)
        self._settled.discard(path)
        for handout in list(pin.waiting):
            self._forget(path, pin, handout)
        os.close(pin.descriptor)

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
                self._expire(time.monotonic())
                if not self._held:
                    self._reaper = None
                    return


def _watch(pins: Pins) -> None:
    global _hook_installed
    with _hook_lock:
        _watched.add(pins)
        if not _hook_installed:
            sys.addaudithook(_notice_open)
            os.register_at_fork(after_in_child=_forget_all_in_child)
            _hook_installed = True


def _notice_open(event: str, arguments: tuple) -> None:
    """Audit hook: an ``open()`` (mode given: not the cache's own ``os.open``)."""
    if event != "open" or arguments[1] is None:
        return
    try:
        path = os.fsdecode(arguments[0])
        if not path.startswith("/") or "//" in path or "/." in path:
            path = os.path.abspath(path)
        for pins in list(_watched):
            pins.opened(path)
    except Exception:  # an audit hook must never fail the open it watches
        pass


def _forget_all_in_child() -> None:
    for pins in list(_watched):
        pins.forget_in_child()
