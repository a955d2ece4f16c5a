"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the test S3 endpoint.

The job talks to the proxy as if it were the S3 server (set S3_ENDPOINT_URL
to `proxy.url`). The proxy forwards each request unchanged, Host header
included, so SigV4 signatures stay valid, and records every request with its
headers and the response status. Rules change what happens to matching
requests:

- `fail(...)`: respond with an S3 error (default 503 SlowDown) instead of forwarding.
- `reset(...)`: reset the TCP connection, before or after forwarding the request.
- `go_down_on(...)`: reset the connection and stop listening, as a server that
  stops; `start()` listens on the same port again.
- `hold(...)`: keep matching requests until `count` of them have arrived, then
  forward them one at a time, so each meets the server state the previous one left.
- `delay(...)`: wait `seconds` before forwarding, as a slow or overloaded server.
  The request still reaches the server when the client has given up waiting.

Rules match on the HTTP method, a substring of the path with its query, and
optionally the presence of a request header.
"""

import contextlib
import dataclasses
import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Headers that belong to one hop. The proxy sets its own.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "expect", "content-length",
})
HOLD_TIMEOUT = 30.0  # seconds a held request waits for the others before it goes on alone


@dataclasses.dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    status: int | None = None  # None when the proxy reset the connection


@dataclasses.dataclass
class Rule:
    action: str  # "fail", "reset", "reset-after", "down", "hold" or "delay"
    method: str | None
    path_contains: str | None
    times: int | None  # matches left; None means unlimited
    status: int = 503
    code: str = "SlowDown"
    count: int = 2  # for "hold"
    header: str | None = None  # lower-case name of a header the request must have
    seconds: float = 0.0  # for "delay"
    matched: int = 0

    def matches(self, method: str, path: str, headers: dict[str, str]) -> bool:
        if self.times is not None and self.matched >= self.times:
            return False
        if self.method is not None and method != self.method:
            return False
        if self.header is not None and self.header not in headers:
            return False
        return self.path_contains is None or self.path_contains in path


class FaultProxy:
    def __init__(self, upstream_url: str):
        upstream = urlsplit(upstream_url)
        if upstream.scheme != "http":
            raise ValueError(f"the fault proxy forwards plain HTTP only, got {upstream_url!r}")
        self.upstream_host = upstream.hostname
        self.upstream_port = upstream.port or 80
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        self._hold_arrivals = threading.Condition(self._lock)
        self._forward_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Listening

    def start(self) -> None:
        """Listen on 127.0.0.1, on a free port the first time and on the same port later."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.proxy = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut open connections, so clients see a stopped server."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # Rules

    def fail(self, *, status: int = 503, code: str = "SlowDown", times: int | None = None,
             method: str | None = None, path_contains: str | None = None,
             header: str | None = None) -> Rule:
        return self._add(Rule("fail", method, path_contains, times, status=status, code=code,
                              header=header))

    def reset(self, *, times: int | None = 1, after_forward: bool = False,
              method: str | None = None, path_contains: str | None = None) -> Rule:
        action = "reset-after" if after_forward else "reset"
        return self._add(Rule(action, method, path_contains, times))

    def go_down_on(self, *, method: str | None = None, path_contains: str | None = None) -> Rule:
        return self._add(Rule("down", method, path_contains, 1))

    def hold(self, *, count: int, method: str | None = None,
             path_contains: str | None = None) -> Rule:
        return self._add(Rule("hold", method, path_contains, count, count=count))

    def delay(self, seconds: float, *, times: int | None = None, method: str | None = None,
              path_contains: str | None = None) -> Rule:
        return self._add(Rule("delay", method, path_contains, times, seconds=seconds))

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def _take_rule(self, method: str, path: str, headers: dict[str, str]) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, headers):
                    rule.matched += 1
                    return rule
        return None

    def _wait_for_hold(self, rule: Rule) -> None:
        with self._hold_arrivals:
            self._hold_arrivals.notify_all()
            self._hold_arrivals.wait_for(lambda: rule.matched >= rule.count, HOLD_TIMEOUT)

    def requests_matching(self, method: str | None = None,
                          path_contains: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [request for request in self.requests
                    if (method is None or request.method == method)
                    and (path_contains is None or path_contains in request.path)]

    # Forwarding

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes):
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                                timeout=60)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_HEADERS:
                    connection.putheader(name, value)
            if body or method in ("PUT", "POST"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.reason, response.getheaders(), data
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class names it so
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset_connection(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.wfile.close()
        self.connection.close()

    def _handle(self) -> None:
        proxy: FaultProxy = self.server.proxy
        body = self._read_body()
        method, path = self.command, self.path
        record = RecordedRequest(method, path, {name.lower(): value
                                                for name, value in self.headers.items()})
        with proxy._lock:
            proxy.requests.append(record)
        rule = proxy._take_rule(method, path, record.headers)
        action = rule.action if rule else "forward"

        if action == "fail":
            record.status = rule.status
            self._send(rule.status, "Injected", [("Content-Type", "application/xml")],
                       _error_xml(rule.code, path))
            return
        if action == "down":
            # Close the listening socket first, so that the client's retry finds no server.
            proxy.stop()
        if action in ("reset", "down"):
            self._reset_connection()
            return
        if action == "hold":
            proxy._wait_for_hold(rule)
        if action == "delay":
            time.sleep(rule.seconds)

        with proxy._forward_lock if action == "hold" else contextlib.nullcontext():
            try:
                status, reason, headers, data = proxy._forward(method, path,
                                                               self.headers.items(), body)
            except OSError:
                # The upstream server is gone: behave like it, with a reset.
                self._reset_connection()
                return
        record.status = status
        if action == "reset-after":
            self._reset_connection()
            return
        try:
            self._send(status, reason, headers, data)
        except OSError:
            if action != "delay":
                raise
            # The client stopped waiting for the slow response and closed the connection.
            self.close_connection = True

    def _send(self, status: int, reason: str, headers, data: bytes) -> None:
        self.send_response_only(status, reason)
        length = str(len(data))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # a HEAD response states the size of the body it omits
            elif name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def _error_xml(code: str, resource: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by the test proxy</Message>"
        f"<Resource>{resource.split('?')[0]}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()
