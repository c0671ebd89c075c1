"""A TCP relay that counts the bytes it carries (threads of this process)."""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 1 << 20
ACCEPT_POLL = 0.05  # seconds between checks for the end
DRAIN_TIMEOUT = 30.0  # seconds the connections get to end once the relay is closed


class CountingRelay:
    """Listens on 127.0.0.1 (``address``) and relays every connection to
    *target*, counting the bytes sent to it (``to_target``) and received
    from it (``from_target``).  ``with CountingRelay(target) as relay:``;
    close the clients first, then the relay."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.to_target = self.from_target = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_POLL)
        self.address: tuple[str, int] = self._listener.getsockname()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def total(self) -> int:
        """Bytes carried both ways."""
        return self.to_target + self.from_target

    def __enter__(self) -> CountingRelay:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()  # the client sees the server's refusal
                continue
            self._sockets += [client, server]
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, upstream),
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(CHUNK):
                with self._lock:
                    if upstream:
                        self.to_target += len(data)
                    else:
                        self.from_target += len(data)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop accepting, let the connections end (their clients closed
        them), then close every socket."""
        self._closing.set()
        self._acceptor.join()
        self._listener.close()
        for thread in self._threads:
            thread.join(DRAIN_TIMEOUT)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # ends a connection left open
        for thread in self._threads:
            thread.join()
        for sock in self._sockets:
            sock.close()
