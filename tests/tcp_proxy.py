"""A loopback TCP proxy that can go silent: it stops forwarding one connection while keeping
both of its sockets open, as a stalled NAT or load balancer does (the kernel still answers
TCP keepalives; nothing else gets through).

    with StallingProxy(("127.0.0.1", 5432)) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        ...
        proxy.stall(upstream_port)   # the connection the server sees from that client port

One thread forwards every connection with select(); `stall(port)` takes the pair whose
upstream socket has that local port (pg_stat_activity.client_port) out of the select.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import Any


class StallingProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._stalled: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="stalling-proxy", daemon=True)
        self._thread.start()

    def stall(self, upstream_local_port: int) -> bool:
        """Stop forwarding the connection whose upstream socket has this local port (both
        directions; the sockets stay open). False if there is no such connection."""
        with self._lock:
            for sock, peer in self._peers.items():
                if sock.getsockname()[1] == upstream_local_port:
                    for side in (sock, peer):
                        self._stalled.add(side)
                        with contextlib.suppress(KeyError, ValueError):
                            self._selector.unregister(side)
                    return True
        return False

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
        with self._lock:
            self._peers[client], self._peers[server] = server, client
            self._selector.register(client, selectors.EVENT_READ, server)
            self._selector.register(server, selectors.EVENT_READ, client)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._peers.pop(sock, None)
            for side in (sock, peer):
                if side is None:
                    continue
                self._peers.pop(side, None)
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(side)
                side.close()

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._selector.select(0.1):
                if key.fileobj is self._listener:
                    with contextlib.suppress(OSError):
                        self._accept()
                    continue
                sock: Any = key.fileobj
                if sock in self._stalled:
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        key.data.setblocking(True)
                        key.data.sendall(data)
                        key.data.setblocking(False)
                        continue
                except OSError:
                    pass
                self._drop(sock)

    def close(self) -> None:
        self._closing = True
        self._thread.join(5)
        with self._lock:
            for sock in list(self._peers):
                sock.close()
            self._peers.clear()
        self._listener.close()
        self._selector.close()

    def __enter__(self) -> StallingProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
