"""Long-lived test connections, held open until told to finish: a server or a client process.

    python hold.py server --count N                  # prints {"port": P}, accepts N connections
    python hold.py client --port P --count N --interval-ms 20   # prints {"lports": [...]} once all are open

Then a line on each one's stdin finishes every connection: the server sends --send bytes on each;
the client reads them, sends its --send bytes and closes; the server reads to EOF and closes. Each
prints {"done": true} when all its connections are closed. Bytes are exact: a client's tx is its
--send, rx the server's --send.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def recv_exactly(sock: socket.socket, n: int) -> None:
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise RuntimeError("EOF early")
        n -= len(chunk)


def server(args: argparse.Namespace) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    emit(port=listener.getsockname()[1])
    conns = [listener.accept()[0] for _ in range(args.count)]
    emit(accepted=len(conns))
    sys.stdin.readline()
    for conn in conns:
        conn.sendall(b"s" * args.send)
    for conn in conns:
        while conn.recv(65536):
            pass
        conn.close()
    listener.close()
    emit(done=True)


def client(args: argparse.Namespace) -> None:
    conns = []
    for _ in range(args.count):
        sock = socket.create_connection(("127.0.0.1", args.port))
        conns.append(sock)
        time.sleep(args.interval_ms / 1000)
    emit(lports=[sock.getsockname()[1] for sock in conns])
    sys.stdin.readline()
    for sock in conns:
        recv_exactly(sock, args.recv)
        sock.sendall(b"c" * args.send)
        sock.close()
    emit(done=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--send", type=int, default=0)
    parser.add_argument("--recv", type=int, default=0)
    parser.add_argument("--interval-ms", type=int, default=0)
    args = parser.parse_args()
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
