"""A TCP proxy that splits and delays: the network at its most awkward, on loopback.

    python -m conformance.proxy --listen 127.0.0.1:0 --target HOST:PORT [--max-delay 0.02] [--seed N]
    python -m conformance 127.0.0.1:PROXYPORT      # the kit, through it

For every client connection the proxy opens one to the target and relays
both directions. Every chunk it reads is cut at 1 to `max_cuts` random points
and each piece is written on its own, after a random pause of 0 to
`max_delay` seconds. Bytes keep their order (one thread per direction writes
its pieces one after the other); only their timing and grouping change, which
TCP allows anyway. A chat/1 server and a client (or the kit) that are right
about framing ([FRAME-4]: a line may arrive in any number of reads) pass
through it unchanged; one that takes one recv() for one line does not.

What it passes on besides bytes:
- a half-close: when one side shuts down its sending side (EOF), the proxy
  shuts down its own sending side toward the other once the bytes before
  the EOF are written, and keeps relaying the other way ([FRAME-10]);
- a reset: when one side resets the connection (or a write to it fails), the
  proxy resets the other side too (SO_LINGER 0), so a server sees a client
  vanish the way it would without the proxy ([LEAVE-3]);
- slowness: the sockets on both sides have small kernel buffers
  (`buffer_size`) and a direction stops reading while it cannot write, so a
  client that stops reading soon looks like one to the server ([LIMIT-6]);
- the source address, on loopback: a client from 127.0.0.2 reaches the
  target from 127.0.0.2, so per-address limits ([LIMIT-2]) count the clients
  and not the proxy.

`DelayProxy` is also usable from Python:

    with DelayProxy(("127.0.0.1", 5000), max_delay=0.01, seed=7) as proxy:
        python_kit_or_client_connects_to(proxy.address)

`close()` (or Ctrl-C / SIGTERM on the command line) stops accepting, cuts
every relayed connection, interrupts the pauses, and joins every thread.
Standard library only, like the rest of the kit.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import re
import selectors
import signal
import socket
import struct
import sys
import threading
import time

#: Bytes asked of recv() at a time.
RECV_SIZE = 65536
#: Kernel send and receive buffer of each proxy socket: what the proxy holds per
#: direction is about four times this (Linux doubles it, on each side), plus one chunk.
BUFFER_SIZE = 64 * 1024
#: Seconds to wait for the target to accept a connection.
CONNECT_TIMEOUT = 5.0


class _Relay:
    """One client connection and its connection to the target, with their two threads."""

    def __init__(self, index: int, client: socket.socket, upstream: socket.socket) -> None:
        self.index = index
        self.client = client
        self.upstream = upstream
        #: Set on a reset or when the proxy closes: pauses end, both threads stop.
        self.interrupted = threading.Event()
        #: Set when the target-to-client direction is over (all it sent passed on, or a reset).
        self.downstream_done = threading.Event()
        self.reset = False
        # Guards the sockets' end: no shutdown() once they are closed.
        self._lock = threading.Lock()
        self._running = 2
        self._closed = False

    def sockets(self) -> tuple[socket.socket, socket.socket]:
        return (self.client, self.upstream)

    def break_off(self) -> None:
        """A reset on one side: reset the other too, and wake both threads."""
        with self._lock:
            self.reset = True
            self.interrupted.set()
            for sock in self.sockets() if not self._closed else ():
                try:
                    # Closed with linger 0 at the end, the socket sends RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)  # wakes a thread blocked in recv() on it
                except OSError:
                    pass

    def cut(self) -> None:
        """The proxy is closing: wake both threads wherever they are (recv, sendall, a pause)."""
        with self._lock:
            self.interrupted.set()
            for sock in self.sockets() if not self._closed else ():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def thread_done(self) -> bool:
        """One direction is over; True for the second, which closes the sockets."""
        with self._lock:
            self._running -= 1
            if self._running:
                return False
            self._closed = True
            for sock in self.sockets():
                sock.close()
            return True


class DelayProxy:
    """Relays TCP connections to `target`, splitting and delaying every chunk (see the module).

    Listening starts in the constructor; `address` is where clients connect.
    `seed` makes the cuts and pauses of each connection repeatable (the timing
    of reads still varies); by default a random one is chosen (`seed` says which).
    """

    def __init__(self, target: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0),
                 max_delay: float = 0.02, seed: int | None = None, max_cuts: int = 3,
                 buffer_size: int = BUFFER_SIZE, keep_source: bool = True) -> None:
        if max_delay < 0 or max_cuts < 0:
            raise ValueError("max_delay and max_cuts must be >= 0")
        self.max_delay = max_delay
        self.max_cuts = max_cuts
        self.buffer_size = buffer_size
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        family, _, _, _, self._target = socket.getaddrinfo(*target, type=socket.SOCK_STREAM)[0]
        self._family = family
        self._keep_source = keep_source and _is_loopback(self._target[0])
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted sockets inherit it before their window is agreed on.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
            self._listener.bind(listen)
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        #: Connections relayed so far, and pieces written (both directions).
        self.connections = 0
        self.pieces = 0
        self._lock = threading.Lock()
        self._relays: set[_Relay] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_forever, name="proxy-acceptor")
        self._acceptor.start()

    # -- accepting -------------------------------------------------------------------------

    def _accept_forever(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._listener and not self._stopping.is_set():
                        self._accept_all()

    def _accept_all(self) -> None:
        while True:
            try:
                client, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of file descriptors: try again on the next event
            upstream = self._connect_upstream(peer[0])
            if upstream is None:
                _reset(client)
                continue
            with self._lock:
                self.connections += 1
                relay = _Relay(self.connections, client, upstream)
                self._relays.add(relay)
                threads = [threading.Thread(target=self._relay, args=(relay, source, sink, name),
                                            name=f"proxy-{relay.index}-{name}", daemon=True)
                           for source, sink, name in ((client, upstream, "up"), (upstream, client, "down"))]
                self._threads.update(threads)
            for sock in relay.sockets():
                sock.setblocking(True)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.buffer_size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_size)
            for thread in threads:
                thread.start()

    def _connect_upstream(self, client_host: str) -> socket.socket | None:
        upstream = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            # Small buffers from the start: the window is agreed on at connect.
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_size)
            if self._keep_source and _is_loopback(client_host):
                try:
                    upstream.bind((client_host, 0))
                except OSError:
                    pass  # another family, or an address this host lacks: any source will do
            upstream.settimeout(CONNECT_TIMEOUT)
            upstream.connect(self._target)
            return upstream
        except OSError:
            upstream.close()
            return None

    # -- relaying --------------------------------------------------------------------------

    def _relay(self, relay: _Relay, source: socket.socket, sink: socket.socket, direction: str) -> None:
        rng = random.Random(f"{self.seed}-{relay.index}-{direction}")
        try:
            while not relay.interrupted.is_set():
                try:
                    data = source.recv(RECV_SIZE)
                except OSError:
                    data = None  # reset (or cut by close())
                if data is None or (not data and (relay.reset or relay.interrupted.is_set())):
                    break
                if not data:
                    # An orderly end: pass the half-close on, after everything before it.
                    try:
                        sink.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                for piece in self._pieces(data, rng):
                    if relay.interrupted.wait(rng.uniform(0.0, self.max_delay)):
                        return
                    try:
                        sink.sendall(piece)
                    except OSError:
                        data = None
                        break
                    with self._lock:
                        self.pieces += 1
                if data is None:
                    break
            if not self._stopping.is_set():
                relay.break_off()
        finally:
            if direction == "down":
                relay.downstream_done.set()
            if relay.thread_done():
                with self._lock:
                    self._relays.discard(relay)

    def _pieces(self, data: bytes, rng: random.Random) -> list[bytes]:
        """`data` cut at 1 to max_cuts random points (none if it is a single byte)."""
        if len(data) < 2 or self.max_cuts == 0:
            return [data]
        count = min(rng.randint(1, self.max_cuts), len(data) - 1)
        cuts = sorted(rng.sample(range(1, len(data)), count))
        return [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    # -- stopping --------------------------------------------------------------------------

    def close(self, drain: float = 0.0) -> None:
        """Stop accepting, cut every relayed connection, join every thread. Idempotent.

        `drain`: first wait up to that many seconds for what the target has sent
        to be passed on, on connections the target has ended (a server that was
        just shut down has said its last words; they are still in the proxy).
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_writer.send(b"\0")
        self._acceptor.join()
        self._listener.close()
        with self._lock:
            relays = list(self._relays)
        deadline = time.monotonic() + drain
        for relay in relays:
            relay.downstream_done.wait(max(0.0, deadline - time.monotonic()))
        for relay in relays:
            relay.cut()
        while True:
            with self._lock:
                threads = [thread for thread in self._threads if thread.is_alive()]
                self._threads.clear()
            if not threads:
                break
            for thread in threads:
                thread.join()
        self._wake_reader.close()
        self._wake_writer.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# -- the command line ---------------------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT; port 0 allowed (to listen on any free port)."""
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<port>[0-9]+)|(?P<host>[^:]+):(?P<port2>[0-9]+)", text)
    if not match or not 0 <= int(match.group("port") or match.group("port2")) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return match.group("v6") or match.group("host"), int(match.group("port") or match.group("port2"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.proxy",
        description="Relay TCP connections to a chat/1 server, cutting every chunk at random points "
                    "and pausing before each piece: byte order is kept, timing and grouping are not.",
        epilog="Stop it with Ctrl-C or SIGTERM.")
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0), metavar="HOST:PORT",
                        help="where to listen (default 127.0.0.1:0, any free port)")
    parser.add_argument("--target", type=_address, required=True, metavar="HOST:PORT",
                        help="the server to relay to")
    parser.add_argument("--max-delay", type=float, default=0.02, metavar="SECONDS",
                        help="longest pause before a piece (default 0.02)")
    parser.add_argument("--max-cuts", type=int, default=3, metavar="N",
                        help="cut each chunk at 1 to N points (default 3; 0 relays chunks whole)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the cuts and pauses")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        proxy = DelayProxy(args.target, listen=args.listen, max_delay=args.max_delay,
                           max_cuts=args.max_cuts, seed=args.seed)
    except OSError as error:
        print(f"proxy: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print("proxy listening on {}:{}".format(*proxy.address), flush=True)
        print("relaying to {}:{} with pauses up to {:g} s, seed {}".format(
            *args.target, args.max_delay, proxy.seed), file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        proxy.close()
    print(f"proxy stopped after {proxy.connections} connections", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
