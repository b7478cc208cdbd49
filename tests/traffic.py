"""Test traffic: a TCP server or client process with its own name, run as a script.

    python traffic.py server --name tl-server --family 4 --host 127.0.0.1 \
        --count 2 --recv 100 --send 200 --close client
    python traffic.py client --name tl-client --family 4 --host 127.0.0.1 --port P \
        --count 2 --send 100 --recv 200 --close client

Each connection: the client sends its --send bytes, the server reads them (its
--recv) and sends its own --send bytes, which the client reads (its --recv), then the side named by --close closes
first (`client`, `server`) or aborts with a reset (`rst-client`, `rst-server`,
after all its data was acknowledged). The process names itself (PR_SET_NAME) so
the kernel comm identifies each side. Every line printed is JSON. With --tcp-info 1, each side
reads the kernel's TCP_INFO just before it closes and prints it: the client in its "closed"
event, the server in a "served" event per connection.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import socket
import struct
import sys
import termios
import time

SIOCOUTQ = termios.TIOCOUTQ  # bytes not yet acknowledged by the peer
# struct tcp_info (include/uapi/linux/tcp.h): byte offsets of the u32 fields we report
TCP_INFO_FIELDS = {"tcpi_rtt": 68, "tcpi_total_retrans": 100, "tcpi_min_rtt": 148}


def set_name(name: str) -> None:
    libc = ctypes.CDLL(None)
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def recv_exactly(sock: socket.socket, n: int) -> None:
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise RuntimeError(f"peer closed with {n} bytes missing")
        n -= len(chunk)


def wait_for_eof(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass  # the peer aborted: as final as a FIN


def wait_until_acked(sock: socket.socket, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(sock.fileno(), SIOCOUTQ, buf)
        if struct.unpack("i", buf)[0] == 0:
            return
        time.sleep(0.001)
    raise RuntimeError("data not acknowledged in time")


def tcp_info(sock: socket.socket) -> dict[str, int]:
    """The kernel's RTT (us), minimum RTT (us) and retransmitted segments of the socket."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return {name: struct.unpack_from("<I", raw, offset)[0] for name, offset in TCP_INFO_FIELDS.items()}


def finish(sock: socket.socket, me: str, closer: str, info: dict | None = None) -> None:
    """Close as the --close mode says, `me` being "client" or "server"; info (when given) gets the
    socket's tcp_info() read just before it closes."""
    if closer == f"rst-{me}":
        wait_until_acked(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif closer != me:
        wait_for_eof(sock)  # the other side closes first (FIN) or resets
    if info is not None:
        info.update(tcp_info(sock))
    sock.close()


def family_of(value: str) -> socket.AddressFamily:
    return socket.AF_INET if value == "4" else socket.AF_INET6


def server(args: argparse.Namespace) -> None:
    listener = socket.socket(family_of(args.family), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)
    emit(event="listening", port=listener.getsockname()[1])
    for _ in range(args.count):
        conn, peer = listener.accept()
        try:
            recv_exactly(conn, args.recv)
            if args.send:
                conn.sendall(b"s" * args.send)
            if args.hold_ms:
                time.sleep(args.hold_ms / 1000)
            info = {} if args.tcp_info else None
            finish(conn, "server", args.close, info)
            if info is not None:
                emit(event="served", rport=peer[1], **info)
        except (ConnectionError, RuntimeError) as exc:
            emit(event="error", error=str(exc))
            conn.close()
    listener.close()
    time.sleep(args.linger_ms / 1000)  # let readers of /proc/PID find us
    emit(event="done")


def client(args: argparse.Namespace) -> None:
    for _ in range(args.count):
        sock = socket.socket(family_of(args.family), socket.SOCK_STREAM)
        # Bind first so the local port is known even when connect() fails.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.bind, args.bind_port))
        lport = sock.getsockname()[1]
        if args.syn_timeout_ms:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, args.syn_timeout_ms)
        start = time.monotonic_ns()
        try:
            sock.connect((args.host, args.port))
        except OSError as exc:
            sock.close()
            emit(event="failed", lport=lport, error=errno.errorcode.get(exc.errno, str(exc.errno)),
                 start_ns=start, end_ns=time.monotonic_ns())
            continue
        if args.send:  # (even an empty send fails once a reset has arrived)
            sock.sendall(b"c" * args.send)
        recv_exactly(sock, args.recv)
        if args.hold_ms:
            time.sleep(args.hold_ms / 1000)
        info = {} if args.tcp_info else None
        finish(sock, "client", args.close, info)
        emit(event="closed", lport=lport, start_ns=start, end_ns=time.monotonic_ns(), **(info or {}))
    emit(event="done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--family", choices=("4", "6"), default="4")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bind", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind-port", type=int, default=0, help="client: local port (0: any)")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--send", type=int, default=0)
    parser.add_argument("--recv", type=int, default=0)
    parser.add_argument("--close", choices=("client", "server", "rst-client", "rst-server"), default="client")
    parser.add_argument("--hold-ms", type=int, default=0, help="pause before closing")
    parser.add_argument("--linger-ms", type=int, default=0, help="server: pause before exiting")
    parser.add_argument("--syn-timeout-ms", type=int, default=0, help="give up connecting after this")
    parser.add_argument("--tcp-info", type=int, choices=(0, 1), default=0,
                        help="1: print TCP_INFO read just before each close")
    args = parser.parse_args()
    set_name(args.name)
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
