"""A TCP proxy on loopback standing in for a venue's uplink: upstream bytes capped at a rate,
or a link that hangs (connections accepted, nothing forwarded, nothing answered)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class UplinkProxy:
    def __init__(self, target: tuple[str, int], rate_bps: float | None = None) -> None:
        self.target = target
        self.rate_bps = rate_bps  # bytes per second client -> server; None: unlimited
        self.hang = False  # new and open connections stop moving
        self.answer_500 = False  # new connections get "500 Internal Server Error" from us
        self.forwarded = 0  # bytes that reached the server
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="uplink-accept").start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.answer_500:
                threading.Thread(target=self._refuse, args=(client,), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _refuse(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            client.settimeout(5)
            client.recv(65536)  # the request line and headers (the body is not awaited)
            client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        src.settimeout(0.2)
        try:
            while not self._stop.is_set():
                if self.hang:
                    time.sleep(0.05)
                    continue
                chunk_size = 4096 if upstream and self.rate_bps else 65536
                try:
                    data = src.recv(chunk_size)
                except TimeoutError:
                    continue
                if not data:
                    break
                if upstream and self.rate_bps:
                    time.sleep(len(data) / self.rate_bps)
                while self.hang and not self._stop.is_set():
                    time.sleep(0.05)
                dst.sendall(data)
                if upstream:
                    self.forwarded += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.close()
