"""The MJPEG-over-HTTP output: what OBS (Media Source), browsers, ffmpeg and VLC can all play without a plugin.

Endpoints:

    /stream.mjpg   multipart/x-mixed-replace; each part is one JPEG with Content-Type and Content-Length
    /frame.jpg     the latest frame as one JPEG
    /              a page showing the stream, and how to add it to OBS

Each frame is encoded once, in ``send()``, and only while somebody watches (a stream client is connected or a
snapshot was asked for in the last few seconds); every client shares that one JPEG. A client too slow for the frame
rate skips frames: ``send()`` only swaps the latest JPEG in, it never waits for a client.
"""

from __future__ import annotations

import errno
import html
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import cv2

from vprod.engine import Sink

BOUNDARY = "vprodframe"
SNAPSHOT_INTEREST_S = 3.0  # after a /frame.jpg request, keep encoding this long (pollers ask again soon)
IDLE_RESEND_S = 1.0  # with no new frame for this long, a stream client gets the latest again (keeps players alive)
CLOSE_GRACE_S = 0.2  # how long close() lets client threads end their streams before cutting the sockets


class _FrameHub:
    """The latest frame and its JPEG, shared by every client thread."""

    def __init__(self, encode):
        self._encode = encode
        self._cond = threading.Condition()
        self._frame = None
        self._frame_seq = 0  # frames received
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0  # the frame the JPEG was made from
        self._clients = 0
        self._wanted_until = 0.0
        self.closed = False
        self.encoded = 0  # JPEGs made, for tests and status

    # --- the sink's side ---
    def put(self, frame) -> None:
        with self._cond:
            self._frame = frame  # a reference only: frames are read-only and shared
            self._frame_seq += 1
            seq = self._frame_seq
            wanted = self._clients > 0 or time.monotonic() < self._wanted_until
        if wanted:
            self._publish(self._encode(frame), seq)  # encoded outside the lock: readers keep the previous JPEG

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # --- the clients' side ---
    def _publish(self, jpeg: bytes, seq: int) -> None:
        with self._cond:
            if seq > self._jpeg_seq:
                self._jpeg, self._jpeg_seq = jpeg, seq
                self.encoded += 1
                self._cond.notify_all()

    def catch_up(self) -> None:
        """Encode the latest frame here when send() did not (nobody was watching yet, and no frame came since)."""
        with self._cond:
            frame, seq = self._frame, self._frame_seq
            stale = frame is not None and seq > self._jpeg_seq
        if stale:
            self._publish(self._encode(frame), seq)

    def add_client(self) -> int:
        """Count a stream client in; returns the sequence number after which its first JPEG may come."""
        with self._cond:
            self._clients += 1
            return self._frame_seq - 1  # the current frame's JPEG, if it exists, or any newer one

    def remove_client(self) -> None:
        with self._cond:
            self._clients -= 1

    def next_jpeg(self, after: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest JPEG made from a frame after `after`, waiting up to `timeout`; (None, after) if none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed and self._jpeg_seq <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, after
                self._cond.wait(left)
            if self.closed:
                return None, after
            return self._jpeg, self._jpeg_seq

    @property
    def clients(self) -> int:
        return self._clients

    def latest_jpeg(self) -> tuple[bytes | None, int]:
        with self._cond:
            return self._jpeg, self._jpeg_seq

    def snapshot(self, timeout: float = 0.5) -> bytes | None:
        """A JPEG of the latest frame (None if no frame ever came)."""
        with self._cond:
            self._wanted_until = time.monotonic() + SNAPSHOT_INTEREST_S
            if self._jpeg is not None and self._jpeg_seq == self._frame_seq:
                return self._jpeg
            after = self._frame_seq - 1
        jpeg, _ = self.next_jpeg(after, timeout)  # frames flowing: send() encodes the next one
        if jpeg is None and not self.closed:
            self.catch_up()  # frames stopped: encode the last one here
            jpeg, _ = self.latest_jpeg()
        return jpeg


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, hub: _FrameHub, log):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.hub = hub
        self.log = log
        self._conns: set[socket.socket] = set()
        self._conns_cond = threading.Condition()
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-reply is ordinary: no traceback on stderr (socketserver's default).
        self.log.debug("client %s: %s", client_address, sys.exc_info()[1])

    def track(self, conn: socket.socket, on: bool) -> None:
        with self._conns_cond:
            (self._conns.add if on else self._conns.discard)(conn)
            self._conns_cond.notify_all()

    def end_connections(self, grace: float) -> None:
        """Let client threads finish for up to `grace` seconds, then cut the sockets of those still writing."""
        deadline = time.monotonic() + grace
        with self._conns_cond:
            while self._conns and (left := deadline - time.monotonic()) > 0:
                self._conns_cond.wait(left)
            stuck = list(self._conns)
        for conn in stuck:  # a client that stopped reading: its blocked write fails at once
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 15  # seconds a stalled client may block its own thread (never the sink)
    server_version = "vprod-mjpeg"

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        self.server.log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/stream.mjpg":
            self._stream()
        elif path == "/frame.jpg":
            jpeg = self.server.hub.snapshot()
            if jpeg is None:
                self._reply(503, "text/plain; charset=utf-8", b"no frame yet\n")
            else:
                self._reply(200, "image/jpeg", jpeg)
        elif path in ("/", "/index.html"):
            self._reply(200, "text/html; charset=utf-8", self._page().encode())
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /stream.mjpg, /frame.jpg or /\n")

    def _reply(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _page(self) -> str:
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        url = html.escape(f"http://{host}/stream.mjpg")
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vprod output</title>
<style>body{{background:#111;color:#ddd;font:15px sans-serif;margin:1em}}img{{max-width:100%;background:#000}}
code{{color:#fff}}a{{color:#9cf}}</style></head>
<body><img src="/stream.mjpg" alt="vprod output">
<p>Add it to OBS: Sources &rarr; + &rarr; Media Source, untick &ldquo;Local File&rdquo;, Input
<code>{url}</code>, leave Input Format empty. One frame: <a href="/frame.jpg">/frame.jpg</a>.</p>
</body></html>
"""

    def _stream(self) -> None:
        hub = self.server.hub
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        after = hub.add_client()
        try:
            while True:
                jpeg, seq = hub.next_jpeg(after, IDLE_RESEND_S)
                if hub.closed:
                    self.wfile.write(f"--{BOUNDARY}--\r\n".encode())
                    break
                if jpeg is None:  # no new frame for a while: send the latest again, so players do not time out
                    hub.catch_up()
                    jpeg, seq = hub.latest_jpeg()
                    if jpeg is None:
                        continue
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                self.wfile.write(b"".join((head, jpeg, b"\r\n")))
                after = seq  # the next one is whatever is newest by then: a slow client skips frames
        except OSError:  # the client went away (or close() cut it off)
            pass
        finally:
            hub.remove_client()
            self.close_connection = True


class MjpegSink(Sink):
    """Serves the output as an MJPEG stream over HTTP (for OBS Media Sources, browsers, ffmpeg, VLC)."""

    options = {
        "port": (8080, "TCP port of the HTTP server (0 picks a free one)"),
        "bind": ("127.0.0.1", "address to listen on; 0.0.0.0 serves other machines too"),
        "quality": (80, "JPEG quality, 1..100"),
    }

    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _hub: _FrameHub | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (differs from the option when that is 0)."""
        return self._server.server_address[1] if self._server else int(self.opts["port"])

    @property
    def url(self) -> str:
        host = self.opts["bind"] if self.opts["bind"] not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/stream.mjpg"

    def where(self) -> str:
        return f"{self.url}  (page: {self.url.rsplit('/', 1)[0]}/ ; OBS: Media Source, uncheck 'Local File')"

    def open(self) -> None:
        try:
            self._quality = int(self.opts["quality"])
            port = int(self.opts["port"])
        except (TypeError, ValueError):
            raise RuntimeError(f"quality and port must be whole numbers (got quality={self.opts['quality']!r}, "
                               f"port={self.opts['port']!r})") from None
        if not 1 <= self._quality <= 100:
            raise RuntimeError(f"quality {self._quality} is out of range (allowed: 1..100)")
        if not 0 <= port <= 65535:
            raise RuntimeError(f"port {port} is out of range (allowed: 0..65535); choose another with --mjpeg-port")
        bind = str(self.opts["bind"])
        self._hub = _FrameHub(self._encode)
        try:
            self._server = _Server((bind, port), self._hub, self.log)
        except OSError as e:
            where = f"{bind}:{port}"
            if e.errno == errno.EADDRINUSE:
                why = "the port is already in use (another vprod, or another program, has it)"
            elif e.errno == errno.EACCES:
                why = "permission denied (ports below 1024 need privileges)"
            else:
                why = e.strerror or str(e)
            raise RuntimeError(f"cannot serve MJPEG on {where}: {why}; choose another port with --mjpeg-port "
                               f"(or `port` in the preset's output)") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"mjpeg-http-{self.port}", daemon=True)
        self._thread.start()
        self.log.info("MJPEG stream on %s", self.url)

    def _encode(self, frame) -> bytes:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for a {frame.shape} {frame.dtype} frame")
        return buf.tobytes()

    def send(self, frame, meta: dict) -> None:
        self._hub.put(frame)

    @property
    def clients(self) -> int:
        """Stream clients being served now."""
        return self._hub.clients if self._hub else 0

    @property
    def encoded(self) -> int:
        """JPEGs made so far (none while nobody watches)."""
        return self._hub.encoded if self._hub else 0

    def close(self) -> None:
        if self._hub is not None:
            self._hub.close()  # wakes every stream: each writes the closing boundary and ends
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()  # returns within one poll interval
                self._thread.join(1.0)
            server.server_close()
            server.end_connections(CLOSE_GRACE_S)
        self._thread = None
