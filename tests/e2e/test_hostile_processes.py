"""Processes any local user can start must not take the agent down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from opentelemetry.proto.logs.v1.logs_pb2 import LogsData

from .test_stdout_formats import collect, flat, parse_lines

CONNECT = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()"
REPLACED = "x\ufffd"  # b"x\xff" with its invalid byte replaced


def test_an_executable_name_that_is_not_utf8_is_reported_with_replacement_characters(
        tmp_path, traffic, start_agent, receiver):
    # A copy of python3 named b"x\xff": its /proc/PID/exe link and its comm are not valid UTF-8.
    exe = os.path.join(os.fsencode(tmp_path), b"x\xff")
    shutil.copy("/usr/bin/python3", exe)
    server, port = traffic.server(name="tl-server", count=2, linger_ms=200)
    # Both agents see the clients' sessions (remote port = the server's).
    ndjson = start_agent("--format", "ndjson", "-D", str(port), "--otlp-endpoint", receiver.endpoint,
                         "--flush-interval", "0.2")
    logs_json = start_agent("--format", "otlp-json", "-D", str(port))
    for _ in range(2):
        subprocess.run([exe, "-c", CONNECT, str(port)], check=True, timeout=30)
    server.events()

    rows = [json.loads(line) for line in collect(ndjson, 2)]
    assert [(row["process.executable.name"], row["thread.name"]) for row in rows] == [(REPLACED, REPLACED)] * 2
    records = parse_lines(logs_json, LogsData, 2)
    assert [flat(r.attributes)["process.executable.name"] for r in records] == [REPLACED] * 2
    assert receiver.wait_for(lambda r: len(r.log_records()) == 2)
    assert {flat(r.attributes)["process.executable.name"] for r in receiver.log_records()} == {REPLACED}
    for agent in (ndjson, logs_json):
        status, _, stderr = agent.stop()
        assert status == 0, stderr
        assert "Traceback" not in stderr
