"""The web server's worker: a request is read whole, within a deadline, before a thread serves it."""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import re
import selectors
import socket
import time
from functools import partial
from typing import Any

import orjson
from gunicorn import http
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from bot.forges import webhook_parser
from bot.metrics import WEBHOOKS
from bot.web import MAX_BODY

REQUEST_DEADLINE = 10.0
"""Seconds a request may take to arrive, headers and body: counted from the connection's accept,
or from the first byte of a kept-alive connection's next request. Past it the answer is 408 and
the connection closes. GitHub and GitLab give up on a delivery after 10 s, so a slower arrival is
lost anyway. Until a request has arrived whole it holds no thread: slow clients cost a buffer
each, never intake for the others."""

HEADER_LIMIT = 64 * 1024
"""Bytes of request line and headers; past them the answer is 431 and the connection closes."""

SMALL_REQUEST = 1024 * 1024
"""Bytes any one arriving request may hold; webhooks are far smaller (a pull request is ~30 KB)."""

LARGE_REQUESTS = 64 * 1024 * 1024
"""Bytes per worker that arriving requests may hold beyond their first `SMALL_REQUEST` each:
room for two bodies at the 25 MiB limit. A request that would go past it is answered 503 (the
forge's delivery shows failed and can be redelivered) and its connection closes."""

LINGER = 2.0
"""Seconds a closing connection is kept to swallow what the client still sends (the rest of a
body refused as too large, say), so that its answer is not lost to a reset."""

REBALANCE = 0.05
"""Seconds between looks, by a worker holding more than its share of connections, at whether it
may take new ones again."""

HEARTBEAT = 1.0
"""Seconds between a worker's signs of life to the arbiter, which gives it `timeout` (30 s) before
it kills it. gthread's loop gives one on each turn, a system call per request."""

_TCP_CORK = getattr(socket, "TCP_CORK", None)  # Linux
_PEEK = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)  # combined once: flags are a slow enum to combine
_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_FRAMING_FIELDS = re.compile(rb"\r\n(content-length|transfer-encoding|expect)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)")
"""In a lower-cased request head, with its final line break: the fields that say where it ends."""


class Arrival:
    """The bytes of one HTTP/1.x request as they come, and when the application can have them.

    `ready` once the request is `complete`, or once the application would refuse it as too
    large without reading further (`read_limit`: the most body bytes it reads). Framing is read
    only as far as needed to find the request's end: anything unusual (conflicting lengths, an
    unknown transfer coding, a malformed chunk) is ready at once, for gunicorn's own parser to
    refuse with its usual answer.
    """

    def __init__(self, deadline: float, read_limit: int):
        self.deadline, self.read_limit = deadline, read_limit
        self.data: bytes | bytearray = b""
        self.ready = self.complete = False
        self.headers_too_large = False
        self.continue_due = False
        """The client waits for `100 Continue` before it sends the body."""
        self._head_end = -1
        self._expects_continue = False
        self._length: int | None = None
        self._next_chunk = 0  # chunked: where the next chunk-size line starts
        self._decoded = 0  # chunked: the body bytes before it

    def feed(self, data: bytes) -> None:
        if not self.data:
            self.data = data  # most requests come in one piece: no copy
        else:
            if isinstance(self.data, bytes):
                self.data = bytearray(self.data)
            self.data += data
        head_known = self._head_end >= 0
        if not head_known:
            self._read_head(len(self.data) - len(data))
        if self._head_end >= 0 and not self.ready:
            self._read_body()
            self.ready = self.ready or self.complete
        self.continue_due = (not head_known and self._expects_continue and not self.ready
                             and len(self.data) == self._head_end)

    def take(self) -> bytes:
        data, self.data = bytes(self.data), b""
        return data

    def _read_head(self, new_from: int) -> None:
        end = self.data.find(b"\r\n\r\n", max(new_from - 3, 0))
        if end < 0:
            self.headers_too_large = len(self.data) > HEADER_LIMIT
            return
        self._head_end = self._next_chunk = end + 4
        head = bytes(self.data[:end + 2]).lower()
        fields: dict[bytes, list[bytes]] = {}
        for name, value in _FRAMING_FIELDS.findall(head):
            fields.setdefault(name, []).append(value)
        lengths, codings = set(fields.get(b"content-length", ())), fields.get(b"transfer-encoding")
        if codings:
            chunked = not lengths and b",".join(codings).rsplit(b",", 1)[-1].strip() == b"chunked"
            self.ready = not chunked
        elif lengths:
            length = lengths.pop()
            if lengths or not length.isdigit():
                self.ready = True
            elif int(length) > self.read_limit:
                self.ready = True  # refused by its length alone
            else:
                self._length = int(length)
        else:
            self._length = 0
        self._expects_continue = (head[:head.find(b"\r\n")].endswith(b" http/1.1")
                                  and fields.get(b"expect") == [b"100-continue"])

    def _read_body(self) -> None:
        if self._length is not None:
            self.complete = len(self.data) - self._head_end >= self._length
            return
        while True:  # chunked: step from one chunk-size line to the next
            line_end = self.data.find(b"\r\n", self._next_chunk)
            if line_end < 0:
                self.ready = len(self.data) - self._next_chunk > 4096  # no sane size line is that long
                return
            size = _CHUNK_SIZE.match(self.data, self._next_chunk, line_end)
            if size is None or self.data[size.end():line_end].lstrip(b" \t")[:1] not in (b"", b";"):
                self.ready = True
                return
            length = int(size.group(), 16)
            if length == 0:
                self.complete = (self.data.startswith(b"\r\n", line_end + 2)
                                 or self.data.find(b"\r\n\r\n", line_end) >= 0)
                return
            if self._decoded + min(length, len(self.data) - line_end - 2) >= self.read_limit:
                self.ready = True  # the application refuses it from what it holds
                return
            if len(self.data) < line_end + 2 + length + 2:
                return
            self._decoded += length
            self._next_chunk = line_end + 2 + length + 2


class DeadlineSocket:
    """The client socket as gunicorn's parser reads it: no read waits past the request's deadline.

    A request reaches a thread whole, so the parser reads the socket only when the application
    reads past a body it refuses, or the framing was unusual."""

    def __init__(self, sock: socket.socket):
        self.sock, self.deadline = sock, 0.0

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(size)
        finally:
            self.sock.setblocking(True)


class Connection(TConn):
    """A client connection; closing it gracefully lingers in the worker's poller, never blocking."""

    def __init__(self, worker: "IntakeWorker", *args: Any):
        super().__init__(*args)
        self.worker = worker
        self.arrival: Arrival | None = None
        self.complete = False
        """The request being served arrived to its end: closing after it needs no lingering unless
        the client sent more."""
        self.source = DeadlineSocket(self.sock)
        self.continued = False
        """`100 Continue` went out for the request being read."""

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self)
        else:
            self.sock.close()


class Served:
    """A request the loop's own thread served, as gthread's `finish_request` reads its future: without
    the locks a `Future` makes for the threads it would be handed between."""

    def __init__(self, keep_alive: bool):
        self.keep_alive = keep_alive

    def cancelled(self) -> bool:
        return False

    def result(self) -> bool:
        return self.keep_alive


class Balance:
    """How many connections each worker of one server holds, in memory they share.

    A worker takes a new connection only while it holds no more than the mean (rounded up), so
    the emptiest always may. Connections whose requests are still arriving (opened early, or
    sent slowly) would otherwise gather in whichever worker woke first, and their requests,
    once whole, be served there one after another while the other workers idle. Each worker
    writes only its own slot; a slot not written for `STALE` seconds is a worker that is gone.
    """

    SLOTS = 64
    STALE = 3.0

    def __init__(self) -> None:
        self._slots = multiprocessing.RawArray("d", 3 * self.SLOTS)  # pid, connections, when written
        self._mine = -1
        self._pid = 0

    def claim(self, first: int) -> None:
        """Take the first free slot from `first` on (a worker's age, so that workers started together
        start apart)."""
        now = time.monotonic()
        for step in range(self.SLOTS):
            slot = (first + step) % self.SLOTS
            if now - self._slots[3 * slot + 2] > self.STALE:
                self._mine, self._pid = slot, os.getpid()
                self.report(0)
                return

    def report(self, connections: int) -> None:
        if self._mine >= 0:
            self._slots[3 * self._mine:3 * self._mine + 3] = [self._pid, connections, time.monotonic()]

    def my_turn(self, connections: int) -> bool:
        """Whether a worker holding `connections` may take one more: always, holding none."""
        if not connections:
            return True
        now, slots = time.monotonic(), self._slots[:]
        held = [slots[i + 1] for i in range(0, len(slots), 3) if now - slots[i + 2] <= self.STALE]
        return not held or connections <= math.ceil(sum(held) / len(held))


class SettledConfig:
    """A worker's gunicorn config with its settings read once, after the fork: gunicorn reads some
    thirty per request, each through `Config.__getattr__` (a tenth of its own time per request).
    What the config answers otherwise (its properties, some named as settings, like `sendfile` and
    `worker_class`, and its methods, all derived from the settings) is asked of it once too, when
    first wanted."""

    def __init__(self, cfg: Any):
        self.__dict__.update({name: setting.get() for name, setting in cfg.settings.items()
                              if not hasattr(type(cfg), name)})
        self._config = cfg

    def __getattr__(self, name: str) -> Any:
        value = self.__dict__[name] = getattr(self._config, name)
        return value


class IntakeWorker(ThreadWorker):
    """gunicorn's threaded worker, with requests read by its event loop instead of its threads.

    The loop buffers each request until it is whole, then serves it: a client that dribbles its
    headers or body costs its buffer, and is cut off at the deadline. With one thread (the
    default of `gitops-bot serve`) the loop's own thread runs the app, with no hand-off; with
    more, gunicorn's pool does, and the worker accepts only while a thread is free.

    Every answer closes its connection, as sync workers' do: the next request then waits in the
    listening socket's one queue for whichever worker is free first. Kept alive, a connection
    would stay with its worker, each worker with its own queue, and the slowest queue sets the
    tail (measured with bench/intake.py: p99 about 1.5 times as long).
    Everything here runs on the loop's thread, except `handle` and what it calls when threads serve.
    """

    deadline = REQUEST_DEADLINE
    read_limit = MAX_BODY + 1
    small_request, large_requests = SMALL_REQUEST, LARGE_REQUESTS
    balance: Balance | None = None

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """In the arbiter, before any worker is forked: the memory the workers will share."""
        super().check_config(cfg, log)
        cls.balance = Balance()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.arriving: dict[Connection, None] = {}  # in deadline order, as each waits as long
        self.serving = 0
        """Requests handed to the app and not answered yet."""
        self.lingering: dict[Connection, float] = {}
        self.large_bytes = 0
        self.listening: dict[Any, Any] = {}
        """Each listener's address, as connections accepted on it are told it."""
        self._notified = 0.0

    @property  # type: ignore[override]
    def worker_connections(self) -> int:
        """gthread's loop accepts while the worker holds fewer connections than this: none while
        every thread is serving, so that a new connection goes to a worker free to serve it."""
        return self._connection_limit if self.serving < self.cfg.threads else 0

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._connection_limit = value

    def finish_request(self, conn: Connection, fs: Any) -> None:  # type: ignore[override]
        self.serving -= 1
        super().finish_request(conn, fs)

    def load_wsgi(self) -> None:
        """Load the app, then leave what it loaded out of the garbage collector's full passes: they
        would otherwise walk every module, route and client on each pass (~0.1 s here)."""
        super().load_wsgi()
        gc.collect()
        gc.freeze()

    def init_process(self) -> None:
        self.cfg = SettledConfig(self.cfg)
        if self.balance is not None:
            self.balance.claim(self.age)
        self._balanced_at = 0.0
        super().init_process()

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._notified >= HEARTBEAT:
            self._notified = now
            super().notify()

    def accept(self, listener: socket.socket) -> None:
        if self.balance is not None and not self.balance.my_turn(self.nr_conns):
            self.worker_connections = self.nr_conns  # gthread's loop keeps it so; see `_rebalance`
            self.set_accept_enabled(False)
            return
        try:
            sock, client = listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        self.nr_conns += 1
        if listener not in self.listening:
            self.listening[listener] = listener.getsockname()
        self.arrive(Connection(self, self.cfg, sock, client, self.listening[listener]))

    def enqueue_req(self, conn: Connection) -> None:  # type: ignore[override]
        """gunicorn's other ways to the thread pool (a kept-alive connection turning readable,
        bytes read ahead past a response) pass through an arrival first."""
        self.arrive(conn)

    def arrive(self, conn: Connection) -> None:
        conn.arrival = Arrival(time.monotonic() + self.deadline, self.read_limit)
        conn.sock.setblocking(False)
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        ready = self._feed(conn, ahead) if ahead else False
        if not ready and conn.arrival is not None:
            ready = self._read(conn)
        if ready:
            self._hand_over(conn)
        elif conn.arrival is not None:
            self.arriving[conn] = None
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: Connection, _sock: socket.socket) -> None:
        if self._read(conn):
            self.poller.unregister(conn.sock)
            del self.arriving[conn]
            self._hand_over(conn)

    def _read(self, conn: Connection) -> bool:
        """Read what has come; True once the request is ready."""
        while True:
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                return False
            except OSError:
                data = b""
            if not data:
                self._drop(conn, None)
                return False
            if self._feed(conn, data):
                return True
            if conn.arrival is None:
                return False
            if conn.arrival.continue_due:
                conn.arrival.continue_due = False
                conn.continued = True
                try:
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except OSError:
                    pass

    def _feed(self, conn: Connection, data: bytes) -> bool:
        """True once the request is ready; a request refused leaves `conn.arrival` None."""
        arrival = conn.arrival
        assert arrival is not None
        held = self._large(arrival)
        arrival.feed(data)
        grown = self._large(arrival) - held
        if grown and self.large_bytes + grown > self.large_requests:
            self._drop(conn, (503, "the server holds too many large requests; redeliver later"))
            return False
        self.large_bytes += grown
        if arrival.headers_too_large:
            self._drop(conn, (431, f"request headers are over {HEADER_LIMIT // 1024} KiB"))
            return False
        return arrival.ready

    def _large(self, arrival: Arrival) -> int:
        return max(len(arrival.data) - self.small_request, 0)

    def _hand_over(self, conn: Connection) -> None:
        arrival = conn.arrival
        assert arrival is not None
        conn.arrival = None
        self.large_bytes -= self._large(arrival)
        conn.complete = arrival.complete
        conn.source.deadline = arrival.deadline
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.source, conn.client)
        conn.parser.unreader.unread(arrival.take())
        conn.data_ready = True
        self.serving += 1
        if self.cfg.threads > 1:
            super().enqueue_req(conn)
            return
        self.finish_request(conn, Served(self.handle(conn)))  # one thread: the loop's own serves it

    def handle_request(self, req: Any, conn: Connection) -> bool:  # type: ignore[override]
        if conn.continued:  # said already, while the body was awaited
            req._expected_100_continue = conn.continued = False
        req.must_close = True  # the next request goes to whichever worker is free: see the class
        if not req._expected_100_continue:  # else gunicorn says `100 Continue` before the app reads
            _cork(conn.sock)
        return super().handle_request(req, conn)

    def _drop(self, conn: Connection, answer: tuple[int, str] | None) -> None:
        """Leave the arrival stage without a request: the client went away, or gets `answer`."""
        arrival = conn.arrival
        assert arrival is not None
        conn.arrival = None
        self.large_bytes -= self._large(arrival)
        if conn in self.arriving:
            del self.arriving[conn]
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        if answer is None:
            conn.sock.close()
            return
        status, message = answer
        forge = _webhook_forge(arrival.data)
        if forge is not None:
            WEBHOOKS.labels(forge, "unverified", f"refused_{status}").inc()
        body = orjson.dumps({"error": message})
        try:
            conn.sock.send(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                           b"Connection: close\r\n\r\n%s" % (status, _REASONS[status].encode(), len(body), body))
        except OSError:
            pass
        self.linger(conn)

    def linger(self, conn: Connection) -> None:
        """Close once the client has had the answer: FIN now, then swallow what it still sends
        until its FIN or for `LINGER` seconds, so that no reset destroys the answer."""
        try:
            if conn.complete and not _has_data(conn.sock):  # nothing more is coming: no reset to fear
                raise ConnectionAbortedError
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            conn.sock.close()  # with the answer, and the FIN in its last segment
            return
        self.lingering[conn] = time.monotonic() + LINGER
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_lingering_readable, conn))

    def _on_lingering_readable(self, conn: Connection, _sock: socket.socket) -> None:
        try:
            data = conn.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)

    def _close(self, conn: Connection) -> None:
        del self.lingering[conn]
        self.poller.unregister(conn.sock)
        conn.sock.close()

    def murder_pending(self) -> None:
        """Also answer 408 to requests past their deadline, and close lingering connections past theirs."""
        super().murder_pending()
        now = time.monotonic()
        while self.arriving:
            conn = next(iter(self.arriving))
            if conn.arrival is not None and conn.arrival.deadline > now:
                break
            self._drop(conn, (408, f"the request did not arrive within {self.deadline:g} s"))
        if not self.alive:  # stopping: connections that sent nothing yet go as kept-alive ones do
            for conn in [c for c in self.arriving if c.arrival is not None and not c.arrival.data]:
                if now - conn.arrival.deadline + self.deadline >= STOP_KEEPALIVE_LINGER:
                    self._drop(conn, None)
        while self.lingering:
            conn, until = next(iter(self.lingering.items()))
            if until > now:
                break
            self._close(conn)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        first = next(iter(self.arriving), None)
        if first is not None and first.arrival is not None:  # wake for the first deadline
            timeout = min(timeout, max(first.arrival.deadline - time.monotonic(), 0.0))
        if self.balance is not None:
            timeout = min(timeout, self._rebalance())
        super().wait_for_and_dispatch_events(timeout)

    def _rebalance(self) -> float:
        """Tell the others what this worker holds; while it holds more than its share, look again
        every `REBALANCE` seconds whether it may accept. Returns how long the loop may sleep."""
        assert self.balance is not None
        self.balance.report(self.nr_conns)
        if self._connection_limit >= self.cfg.worker_connections:
            return 1.0
        now = time.monotonic()
        if now - self._balanced_at >= REBALANCE:
            self._balanced_at = now
            if self.balance.my_turn(self.nr_conns):
                self.worker_connections = self.cfg.worker_connections
                self.set_accept_enabled(True)  # now, not after the wait this precedes
                return 1.0
        return REBALANCE


def _webhook_forge(data: bytes | bytearray) -> str | None:
    """The forge a request refused here was a delivery to, by its request line, as the app counts its
    own refusals; `unknown` for a POST elsewhere; None for any other method, or no request line yet."""
    line_end = data.find(b"\r\n", 0, 8192)
    if line_end < 0:
        return None
    method, _, rest = bytes(data[:line_end]).partition(b" ")
    path = rest.partition(b" ")[0].partition(b"?")[0]
    forge = path.removeprefix(b"/webhooks/").decode("latin-1") if path.startswith(b"/webhooks/") else ""
    if method != b"POST":
        return None
    return forge if webhook_parser(forge) is not None else "unknown"


def _has_data(sock: socket.socket) -> bool:
    """Whether the client sent more than was read."""
    try:
        return bool(sock.recv(1, _PEEK))
    except BlockingIOError:
        return False


def _cork(sock: socket.socket) -> None:
    """Hold what is written to a TCP socket until it closes (or a segment fills): an answer's head and
    body, and the FIN, go as one segment, one wake-up of the client rather than three. A socket that
    is not TCP (a Unix one) refuses, and writes as it is."""
    if _TCP_CORK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
        except OSError:
            pass
