"""The agent ships every session to a real OTLP/gRPC receiver, exactly and under faults."""

from __future__ import annotations

import json
import os
import socket
import time

import grpc
import pytest

from ..otlp_receiver import OtlpReceiver

SECRET = "Bearer s3cr3t-e2e-token"
FAST = ("--flush-interval", "0.2")


def start_exporting(start_agent, endpoint: str, port: int, *extra: str, env: dict | None = None):
    """An agent watching one server port, exporting to endpoint."""
    return start_agent("--format", "none", "--otlp-endpoint", endpoint, "-L", str(port), *FAST, *extra,
                       env=env)


def sessions(traffic, count: int = 1, send: int = 1000, recv: int = 2000, close: str = "client"):
    """count connections to a fresh tl-server; returns (server, port, client, closed events)."""
    server, port = traffic.server(name="tl-server", count=count, recv=send, send=recv, close=close)
    client = traffic.client(name="tl-client", port=port, count=count, send=send, recv=recv, close=close)
    closed = [e for e in client.events() if e["event"] == "closed"]
    server.events()
    return server, port, client, closed


def attrs(item) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in item.attributes}


def test_every_field_of_logs_and_spans_against_ground_truth(traffic, start_agent, receiver):
    env = {"OTEL_SERVICE_NAME": "edge-probe", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=sre"}
    # The server outlives the agent's next read, so its /proc/PID/exe is there to see.
    server, port = traffic.server(name="tl-server", count=3, recv=100000, send=200000, close="server",
                                  linger_ms=1000)
    # The agent's own Resource (its OTEL variables): tests/e2e/test_process_resource.py has the process's.
    agent = start_exporting(start_agent, receiver.endpoint, port, "--resource", "agent", "-x", env=env)
    before = time.time_ns()
    client = traffic.client(name="tl-client", port=port, count=3, send=100000, recv=200000, close="server")
    closed = [e for e in client.events() if e["event"] == "closed"]
    server.events()
    assert receiver.wait_for(lambda r: len(r.log_records()) == 3 and len(r.spans()) == 3)
    returncode, _, stderr = agent.stop()
    after = time.time_ns()
    assert returncode == 0, stderr

    logs = receiver.log_records_with_resource()
    spans = {s.span_id: (res, scope, s) for res, scope, s in receiver.spans_with_resource()}
    client_ports = {e["lport"] for e in closed}
    for resource, scope, log in logs:
        a = attrs(log)
        assert a == {
            "network.transport": "tcp", "network.type": "ipv4",
            "network.local.address": "127.0.0.1", "network.local.port": port,
            "network.peer.address": "127.0.0.1", "network.peer.port": a["network.peer.port"],
            "client.address": "127.0.0.1", "client.port": a["network.peer.port"],
            "server.address": "127.0.0.1", "server.port": port,
            "process.pid": server.pid, "process.executable.name": os.path.basename(os.path.realpath(
                f"/proc/{os.getpid()}/exe")),
            "thread.name": "tl-server", "tcplife.role": "server",
            "tcplife.bytes_sent": 200000, "tcplife.bytes_received": 100000,
            "tcplife.duration_ms": a["tcplife.duration_ms"],
            # What happened on the wire: exact values are tests/kernel/test_wire_facts.py's.
            "tcplife.rtt_ms": a["tcplife.rtt_ms"], "tcplife.rtt_min_ms": a["tcplife.rtt_min_ms"],
            "tcplife.retransmits": 0, "tcplife.closed_by": "local", "tcplife.close_state": a["tcplife.close_state"],
        }
        assert 0 < a["tcplife.rtt_min_ms"] <= a["tcplife.rtt_ms"] < 1000
        assert a["network.peer.port"] in client_ports
        assert log.event_name == "tcplife.session" and log.severity_number == 9
        assert log.body.string_value.startswith(f"tl-server 127.0.0.1:{a['network.peer.port']} -> 127.0.0.1:{port} "
                                                f"tx=195.3KiB rx=97.7KiB ")
        assert before <= log.time_unix_nano <= log.observed_time_unix_nano <= after
        res = attrs(resource)
        assert res["service.name"] == "edge-probe"
        assert (res["deployment.environment.name"], res["team"]) == ("test", "sre")
        assert res["host.name"] == socket.gethostname() and res["os.type"] == "linux"
        assert res["telemetry.sdk.language"] == "python" and "service.instance.id" in res
        assert (scope.name, scope.version) == ("otel_tcplife", "0.1.0")

        _, _, span = spans[log.span_id]  # the span of the same session
        assert span.trace_id == log.trace_id and len(span.trace_id) == 16
        assert (span.name, span.kind, span.status.code) == ("tcp accept", 2, 0)
        assert attrs(span) == a
        assert span.end_time_unix_nano == log.time_unix_nano
        duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        assert abs(duration_ms - a["tcplife.duration_ms"]) < 0.01
        assert before <= span.start_time_unix_nano < span.end_time_unix_nano <= after
    assert len({log.trace_id for _, _, log in logs}) == 3

    summary = agent.summary()
    assert summary["sessions_observed"] == 3
    for signal in ("logs", "traces"):
        assert (summary[signal]["exported"], summary[signal]["dropped"]) == (3, 0)


def test_failed_connect_span_has_error_status(traffic, start_agent, receiver):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    agent = start_agent("--format", "none", "--otlp-endpoint", receiver.endpoint, "-D", str(closed_port), *FAST)
    failed = traffic.client(name="tl-client", port=closed_port).events()[0]
    assert failed["error"] == "ECONNREFUSED"
    assert receiver.wait_for(lambda r: len(r.spans()) == 1 and len(r.log_records()) == 1)
    agent.stop()
    (span,) = receiver.spans()
    assert (span.name, span.kind, span.status.code, span.status.message) == ("tcp connect", 3, 2, "ECONNREFUSED")
    a = attrs(span)
    assert (a["error.type"], a["tcplife.bytes_sent"], a["tcplife.bytes_received"]) == ("ECONNREFUSED", 0, 0)
    assert a["server.port"] == closed_port and a["network.local.port"] == failed["lport"]


def test_collector_unavailable_for_seconds_loses_nothing(traffic, start_agent, receiver):
    receiver.fail_for(grpc.StatusCode.UNAVAILABLE, seconds=3)
    server, port = traffic.server(name="tl-server", count=20)
    agent = start_exporting(start_agent, receiver.endpoint, port)
    traffic.client(name="tl-client", port=port, count=20).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.log_records()) == 20 and len(r.spans()) == 20, timeout=20)
    agent.stop()
    summary = agent.summary()
    for signal in ("logs", "traces"):
        assert summary[signal]["exported"] == 20 and summary[signal]["dropped"] == 0
        assert summary[signal]["retries"] >= 1
    assert receiver.call_count(outcome="UNAVAILABLE") >= 2


def test_resource_exhausted_with_retry_info_is_retried_after_the_delay(traffic, start_agent, receiver):
    receiver.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, count=1, retry_after=1.5, signal="logs")
    server, port, _, _ = None, None, None, None
    server, port = traffic.server(name="tl-server", count=5)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--signals", "logs")
    traffic.client(name="tl-client", port=port, count=5).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.log_records()) == 5, timeout=15)
    agent.stop()
    calls = [c for c in receiver.call_log if c.signal == "logs"]
    assert [c.outcome for c in calls[:2]] == ["RESOURCE_EXHAUSTED", "ok"]
    assert calls[1].started - calls[0].ended >= 1.5 - 0.05  # the server's RetryInfo delay
    assert agent.summary()["logs"]["retries"] == 1
    assert receiver.spans() == []  # --signals logs


def test_resource_exhausted_without_retry_info_is_permanent(traffic, start_agent, receiver):
    receiver.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, count=1, signal="logs")
    server, port = traffic.server(name="tl-server", count=4)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--signals", "logs")
    traffic.client(name="tl-client", port=port, count=4).events()
    server.events()
    time.sleep(1.5)
    returncode, _, stderr = agent.stop()
    summary = agent.summary()["logs"]
    assert returncode == 0
    assert summary["dropped_permanent"] == 4 - summary["exported"] > 0
    assert summary["retries"] == 0
    assert receiver.call_count("logs", "RESOURCE_EXHAUSTED") == 1
    assert "RESOURCE_EXHAUSTED" in stderr


def test_partial_success_is_counted_logged_and_not_retried(traffic, start_agent, receiver):
    receiver.partial_success(rejected=2, message="2 records over quota", signal="traces")
    server, port = traffic.server(name="tl-server", count=3)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--batch-size", "3")
    traffic.client(name="tl-client", port=port, count=3).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.spans()) == 3 and len(r.log_records()) == 3)
    time.sleep(0.5)
    _, _, stderr = agent.stop()
    summary = agent.summary()
    assert (summary["traces"]["rejected"], summary["traces"]["retries"]) == (2, 0)
    assert summary["logs"]["rejected"] == 0
    assert receiver.call_count("traces") == 1
    assert "2 records over quota" in stderr


def test_a_partial_success_with_only_a_warning_is_logged(traffic, start_agent, receiver):
    receiver.partial_success(rejected=0, message="attribute values truncated to 256 bytes", signal="logs")
    server, port = traffic.server(name="tl-server", count=3)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--batch-size", "3")
    traffic.client(name="tl-client", port=port, count=3).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.spans()) == 3 and len(r.log_records()) == 3)
    _, _, stderr = agent.stop()
    summary = agent.summary()
    assert (summary["logs"]["exported"], summary["logs"]["rejected"], summary["logs"]["retries"]) == (3, 0, 0)
    assert receiver.call_count("logs") == 1  # not retried
    assert ("logs: server accepted 1 requests with a warning (partial success): "
            "attribute values truncated to 256 bytes") in stderr


def test_the_stats_line_balances_while_a_request_is_in_flight(traffic, start_agent, receiver):
    receiver.delay_responses(3)  # a slow collector: requests stay in flight
    server, port = traffic.server(name="tl-server", count=12)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--batch-size", "5", "--max-in-flight", "1",
                            "--stats-interval", "0.3")
    traffic.client(name="tl-client", port=port, count=12).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.log_records()) == 12 and len(r.spans()) == 12, timeout=30)
    returncode, _, stderr = agent.stop()
    assert returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    for stats in lines:
        for signal in ("logs", "traces"):
            s = stats[signal]
            assert s["accepted"] == stats["sessions_observed"], stats
            assert s["accepted"] == s["exported"] + s["dropped"] + s["rejected"] + s["queued"] + s["in_flight"], stats
    seen = [s["logs"]["in_flight"] for s in lines if s["sessions_observed"] == 12]
    assert 5 in seen  # a line was printed while a batch of 5 was being sent
    assert lines[-1]["logs"]["in_flight"] == 0 and lines[-1]["logs"]["exported"] == 12


def test_invalid_argument_drops_and_counts(traffic, start_agent, receiver):
    receiver.fail_next(grpc.StatusCode.INVALID_ARGUMENT, count=100, message="schema says no")
    server, port = traffic.server(name="tl-server", count=3)
    agent = start_exporting(start_agent, receiver.endpoint, port)
    traffic.client(name="tl-client", port=port, count=3).events()
    server.events()
    time.sleep(1)
    _, _, stderr = agent.stop()
    summary = agent.summary()
    for signal in ("logs", "traces"):
        assert summary[signal]["dropped_permanent"] == 3 and summary[signal]["exported"] == 0
    assert "INVALID_ARGUMENT" in stderr and "schema says no" in stderr


def test_receiver_that_never_comes_up_exits_cleanly_with_counts(traffic, start_agent):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]  # nothing listens here
    server, port = traffic.server(name="tl-server", count=5)
    agent = start_exporting(start_agent, f"http://127.0.0.1:{nowhere}", port, "--shutdown-timeout", "1")
    traffic.client(name="tl-client", port=port, count=5).events()
    server.events()
    time.sleep(0.5)
    started = time.monotonic()
    returncode, _, _ = agent.stop()
    assert returncode == 0
    assert time.monotonic() - started < 1 + 3  # the shutdown deadline, plus process exit
    summary = agent.summary()
    for signal in ("logs", "traces"):
        assert summary[signal]["exported"] == 0
        assert summary[signal]["dropped"] == summary[signal]["accepted"] == 5


def test_slow_collector_gets_several_requests_in_flight(traffic, start_agent, receiver):
    receiver.delay_responses(0.5)
    server, port = traffic.server(name="tl-server", count=60)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--batch-size", "5", "--signals", "logs")
    traffic.client(name="tl-client", port=port, count=60).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.log_records()) == 60, timeout=20)
    agent.stop()
    assert receiver.max_concurrent_calls > 1
    assert agent.summary()["logs"]["exported"] == 60


def test_headers_reach_the_collector_and_never_the_logs(traffic, start_agent, receiver):
    receiver.fail_next(grpc.StatusCode.UNAUTHENTICATED, count=1, signal="logs")
    env = {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization={SECRET.replace(' ', '%20')},x-tenant=t1"}
    server, port = traffic.server(name="tl-server", count=2)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--verbose", env=env)
    traffic.client(name="tl-client", port=port, count=2).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.spans()) == 2)
    time.sleep(0.5)
    _, _, stderr = agent.stop()
    assert receiver.metadata[0]["authorization"] == SECRET
    assert receiver.metadata[0]["x-tenant"] == "t1"
    assert "UNAUTHENTICATED" in stderr
    assert "s3cr3t" not in stderr


def test_tls_with_the_collectors_ca(traffic, start_agent, certs):
    with OtlpReceiver(tls=certs.server_tls()) as rx:
        server, port = traffic.server(name="tl-server", count=2)
        agent = start_exporting(start_agent, rx.endpoint, port, "--otlp-certificate", str(certs.ca_cert.path))
        traffic.client(name="tl-client", port=port, count=2).events()
        server.events()
        assert rx.wait_for(lambda r: len(r.log_records()) == 2 and len(r.spans()) == 2)
        agent.stop()


def test_mtls_delivers_with_a_client_certificate_and_not_without(traffic, start_agent, certs):
    with OtlpReceiver(tls=certs.server_tls(mtls=True)) as rx:
        server, port = traffic.server(name="tl-server", count=4)
        good = start_exporting(start_agent, rx.endpoint, port, "--otlp-certificate", str(certs.ca_cert.path),
                               "--otlp-client-key", str(certs.client_key.path),
                               "--otlp-client-certificate", str(certs.client_cert.path))
        bad = start_exporting(start_agent, rx.endpoint, port, "--otlp-certificate", str(certs.ca_cert.path),
                              "--retry-max-elapsed", "0", "--signals", "logs")
        traffic.client(name="tl-client", port=port, count=4).events()
        server.events()
        assert rx.wait_for(lambda r: len(r.log_records()) == 4 and len(r.spans()) == 4)
        time.sleep(1)
        good.stop()
        bad.stop()
        assert good.summary()["logs"]["exported"] == 4
        assert bad.summary()["logs"]["exported"] == 0
        assert bad.summary()["logs"]["dropped"] == 4
        assert len(rx.log_records()) == 4  # only the good agent's


@pytest.mark.parametrize("args,env,message", [
    (["--otlp-endpoint", "ftp://127.0.0.1:1"], {}, "scheme must be http or https"),
    (["--otlp-endpoint", "http://127.0.0.1:70000"], {}, "bad port"),
    (["--otlp-endpoint", "https://127.0.0.1:1", "--otlp-certificate", "/nonexistent/ca.pem"], {},
     "cannot read OTLP certificate /nonexistent/ca.pem"),
    ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_HEADERS": "tokens3cr3t"},
     "malformed OTEL_EXPORTER_OTLP_HEADERS: entry 1 has no '='"),
    (["--signals", "metrics"], {}, "invalid signals"),
    (["--format", "xml"], {}, "invalid choice"),
])
def test_bad_export_settings_exit_2_with_one_line(args, env, message):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "otel_tcplife", *args], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "s3cr3t" not in result.stderr


def test_gzip_only_when_asked(traffic, start_agent):
    # This receiver refuses gzip-compressed requests: only the plain agent gets through.
    with OtlpReceiver(accept_gzip=False) as rx:
        server, port = traffic.server(name="tl-server", count=2)
        plain = start_exporting(start_agent, rx.endpoint, port, "--signals", "logs")
        gzip = start_exporting(start_agent, rx.endpoint, port, "--signals", "logs", "--otlp-compression", "gzip",
                               "--retry-max-elapsed", "0")
        traffic.client(name="tl-client", port=port, count=2).events()
        server.events()
        assert rx.wait_for(lambda r: len(r.log_records()) == 2)
        time.sleep(1)
        plain.stop()
        gzip.stop()
        assert plain.summary()["logs"]["exported"] == 2
        assert gzip.summary()["logs"]["exported"] == 0 and gzip.summary()["logs"]["dropped"] == 2
