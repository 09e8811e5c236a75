"""A TCP proxy in front of a daemon that loses one answer, as a member that dies right after acting on a call."""

from __future__ import annotations

import contextlib
import socket
import threading


class LosingProxy:
    """A TCP proxy to a daemon that loses one answer: it forwards both ways, and at the ``nth`` response the
    daemon starts (an HTTP/2 HEADERS frame without END_STREAM) it closes the connection instead of passing it on,
    so the call was made but its caller never hears of it."""

    def __init__(self, upstream: int, nth: int, refuse_after: bool = False) -> None:
        """``refuse_after``: once the answer is lost, take no new connection (the member is gone)."""
        self.upstream, self.nth, self.seen, self.refuse_after = upstream, nth, 0, refuse_after
        self.lost = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        hang_up(self.listener)  # a blocked accept() wakes up; later connections are refused

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._responses, args=(server, client), daemon=True).start()

    @staticmethod
    def _requests(client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        hang_up(client, server)

    def _responses(self, server: socket.socket, client: socket.socket) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                pending += data
                while len(pending) >= 9 and len(pending) >= 9 + int.from_bytes(pending[:3], "big"):
                    size = 9 + int.from_bytes(pending[:3], "big")
                    frame, pending = pending[:size], pending[size:]
                    if frame[3] == 1 and not frame[4] & 1 and not self.lost.is_set():  # a response starts
                        self.seen += 1
                        if self.seen == self.nth:
                            self.lost.set()
                            if self.refuse_after:
                                self.close()
                            raise OSError("the answer is lost")
                    client.sendall(frame)
        hang_up(client, server)


def hang_up(*ends: socket.socket) -> None:
    """Ends both directions of each connection at once (a thread blocked reading one wakes up), then closes it."""
    for end in ends:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()
