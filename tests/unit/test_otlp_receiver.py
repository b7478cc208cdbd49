"""The OTLP test support works: receiver, fault injection, TLS material, rotel relay.

Driven by a plain grpc client and hand-built OTLP messages.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ..certs import make_certs
from ..otlp_receiver import OtlpReceiver
from ..rotel_relay import RotelRelay

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("0102030405060708")


def kv(key: str, value: object) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def any_value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in value.items()]))
    return AnyValue(string_value=value)


def logs_request(*event_names: str) -> logs_service_pb2.ExportLogsServiceRequest:
    """One resource, one scope, a log record per event name, every LogRecord field set."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add(schema_url="https://opentelemetry.io/schemas/1.30.0")
    resource_logs.resource.attributes.extend([kv("service.name", "otel-tcplife"), kv("host.name", "h1")])
    resource_logs.resource.dropped_attributes_count = 1
    scope_logs = resource_logs.scope_logs.add(schema_url="https://opentelemetry.io/schemas/1.30.0")
    scope_logs.scope.name = "otel_tcplife"
    scope_logs.scope.version = "0.1.0"
    scope_logs.scope.attributes.append(kv("probe", "tcplife"))
    scope_logs.scope.dropped_attributes_count = 2
    for i, name in enumerate(event_names):
        scope_logs.log_records.append(LogRecord(
            time_unix_nano=1_700_000_000_000_000_000 + i, observed_time_unix_nano=1_700_000_000_500_000_000,
            severity_number=9, severity_text="INFO", body=any_value({"msg": "closed", "n": i}),
            attributes=[kv("network.peer.port", 443), kv("tcp.rtt", 0.25), kv("ok", True),
                        kv("raw", b"\x00\xff"), kv("list", ["a", 1]), kv("index", i)],
            dropped_attributes_count=3, flags=1, trace_id=TRACE_ID, span_id=SPAN_ID, event_name=name))
    return request


def traces_request(*names: str) -> trace_service_pb2.ExportTraceServiceRequest:
    """One resource, one scope, a span per name, every Span field set."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.30.0")
    resource_spans.resource.attributes.append(kv("service.name", "otel-tcplife"))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "otel_tcplife"
    scope_spans.scope.version = "0.1.0"
    for i, name in enumerate(names):
        span = Span(trace_id=TRACE_ID, span_id=SPAN_ID[:-1] + bytes([i]), trace_state="k=v",
                    parent_span_id=PARENT_ID, flags=0x301, name=name, kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=1_700_000_000_000_000_000,
                    end_time_unix_nano=1_700_000_001_000_000_000,
                    attributes=[kv("network.peer.address", "10.0.0.1"), kv("bytes", 1 << 40)],
                    dropped_attributes_count=1, dropped_events_count=2, dropped_links_count=3)
        span.events.add(time_unix_nano=1_700_000_000_100_000_000, name="retransmit",
                        attributes=[kv("n", 1)], dropped_attributes_count=1)
        span.links.add(trace_id=TRACE_ID, span_id=PARENT_ID, trace_state="a=b",
                       attributes=[kv("l", "x")], dropped_attributes_count=1, flags=0x100)
        span.status.code = span.status.STATUS_CODE_ERROR
        span.status.message = "reset"
        scope_spans.spans.append(span)
    return request


def export_logs(target: str, request, credentials: grpc.ChannelCredentials | None = None, **kwargs):
    with _channel(target, credentials) as channel:
        return logs_service_pb2_grpc.LogsServiceStub(channel).Export(request, timeout=5, **kwargs)


def export_traces(target: str, request, credentials: grpc.ChannelCredentials | None = None, **kwargs):
    with _channel(target, credentials) as channel:
        return trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=5, **kwargs)


def _channel(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials)


def failure(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.fixture
def receiver():
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


# -- receiving -------------------------------------------------------------

def test_logs_and_spans_arrive_with_resource_scope_and_metadata(receiver):
    assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}" and receiver.port > 0
    sent_logs, sent_traces = logs_request("a", "b"), traces_request("s")

    assert export_logs(receiver.target, sent_logs, metadata=[("x-tenant", "t1")]) == \
        logs_service_pb2.ExportLogsServiceResponse()
    export_traces(receiver.target, sent_traces)

    assert receiver.logs == [sent_logs] and receiver.traces == [sent_traces]
    assert [r.event_name for r in receiver.log_records()] == ["a", "b"]
    resource, scope, record = receiver.log_records_with_resource()[1]
    assert resource == sent_logs.resource_logs[0].resource
    assert scope.name == "otel_tcplife" and record == sent_logs.resource_logs[0].scope_logs[0].log_records[1]
    (resource, scope, span), = receiver.spans_with_resource()
    assert resource.attributes[0].value.string_value == "otel-tcplife" and span.name == "s"
    assert receiver.metadata[0]["x-tenant"] == "t1" and "x-tenant" not in receiver.metadata[1]
    assert receiver.calls == {("logs", "ok"): 1, ("traces", "ok"): 1}
    assert [(c.signal, c.outcome, c.items) for c in receiver.call_log] == [("logs", "ok", 2), ("traces", "ok", 1)]
    assert receiver.wait_for(lambda r: len(r.spans()) == 1, timeout=1)
    assert not receiver.wait_for(lambda r: len(r.spans()) == 2, timeout=0.05)


def test_restart_keeps_port_and_data(receiver):
    export_logs(receiver.target, logs_request("before"))
    port = receiver.port
    receiver.stop()
    assert failure(lambda: export_logs(receiver.target, logs_request("down"))).code() == UNAVAILABLE
    receiver.start()
    assert receiver.port == port
    with pytest.raises(RuntimeError, match="cannot listen"):
        OtlpReceiver(port=port).start()
    export_logs(receiver.target, logs_request("after"))
    assert [r.event_name for r in receiver.log_records()] == ["before", "after"]


def test_refusing_gzip_shows_whether_a_client_compresses():
    with OtlpReceiver(accept_gzip=False) as rx:
        export_logs(rx.target, logs_request("plain"))
        error = failure(lambda: export_logs(rx.target, logs_request("gz"), compression=grpc.Compression.Gzip))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert [r.event_name for r in rx.log_records()] == ["plain"]


# -- fault injection -------------------------------------------------------

def test_fail_next_fails_in_order_per_signal_and_records_nothing(receiver):
    receiver.fail_next(UNAVAILABLE, count=2, signal="logs")
    receiver.fail_next(grpc.StatusCode.INVALID_ARGUMENT, message="bad")

    # a traces call skips the logs-only rule and takes the second
    error = failure(lambda: export_traces(receiver.target, traces_request("t")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details() == "bad"
    assert receiver.spans() == [] and receiver.calls["traces", "INVALID_ARGUMENT"] == 1
    for _ in range(2):
        error = failure(lambda: export_logs(receiver.target, logs_request("x")))
        assert error.code() == UNAVAILABLE and error.details() == "injected"
    export_logs(receiver.target, logs_request("y"))

    assert [r.event_name for r in receiver.log_records()] == ["y"]
    assert receiver.calls == {("traces", "INVALID_ARGUMENT"): 1, ("logs", "UNAVAILABLE"): 2, ("logs", "ok"): 1}
    assert receiver.call_count("logs") == 3 and receiver.call_count(outcome="ok") == 1
    assert len(receiver.metadata) == 4


def test_retry_info_readable_both_ways(receiver):
    receiver.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=1.5, message="slow down")
    error = failure(lambda: export_logs(receiver.target, logs_request("x")))
    trailers = dict(error.trailing_metadata())

    # opentelemetry-python: a bare RetryInfo under its own key
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert info.retry_delay.ToNanoseconds() == 1_500_000_000

    # OpenTelemetry Collector: google.rpc.Status in grpc-status-details-bin, RetryInfo among its details
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and status.message == "slow down"
    detail = error_details_pb2.RetryInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(detail)
    assert detail == info
    assert receiver.log_records() == []


def test_no_retry_info_without_retry_after(receiver):
    receiver.fail_next(UNAVAILABLE)
    trailers = dict(failure(lambda: export_logs(receiver.target, logs_request("x"))).trailing_metadata())
    assert "google.rpc.retryinfo-bin" not in trailers and "grpc-status-details-bin" not in trailers


def test_fail_for_fails_every_call_until_time_passes(receiver):
    receiver.fail_for(UNAVAILABLE, 0.3, signal="traces")
    export_logs(receiver.target, logs_request("unaffected"))
    for _ in range(3):
        assert failure(lambda: export_traces(receiver.target, traces_request("t"))).code() == UNAVAILABLE
    time.sleep(0.3)
    export_traces(receiver.target, traces_request("t"))
    assert receiver.calls == {("logs", "ok"): 1, ("traces", "UNAVAILABLE"): 3, ("traces", "ok"): 1}
    assert len(receiver.spans()) == 1


def test_partial_success_answers_and_records(receiver):
    receiver.partial_success(1, "one dropped", count=2)
    logs_response = export_logs(receiver.target, logs_request("a", "b"))
    traces_response = export_traces(receiver.target, traces_request("s1", "s2"))
    assert export_logs(receiver.target, logs_request("c")) == logs_service_pb2.ExportLogsServiceResponse()

    assert logs_response.partial_success.rejected_log_records == 1
    assert logs_response.partial_success.error_message == "one dropped"
    assert traces_response.partial_success.rejected_spans == 1
    assert traces_response.partial_success.error_message == "one dropped"
    assert len(receiver.log_records()) == 3 and len(receiver.spans()) == 2
    assert receiver.rejected == {"logs": 1, "traces": 1}
    assert receiver.calls == {("logs", "partial"): 1, ("traces", "partial"): 1, ("logs", "ok"): 1}


def test_slow_collector_overlapping_calls_and_client_timeouts(receiver):
    receiver.delay_responses(0.3)
    with grpc.insecure_channel(receiver.target) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        started = time.monotonic()
        calls = [stub.Export.future(logs_request(f"e{i}"), timeout=5) for i in range(3)]
        for call in calls:
            call.result()
        assert time.monotonic() - started >= 0.3
        assert receiver.max_concurrent_calls >= 2

        error = failure(lambda: stub.Export(logs_request("late"), timeout=0.1))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert receiver.wait_for(lambda r: r.calls["logs", "cancelled"] == 1, timeout=2)
    assert sorted(r.event_name for r in receiver.log_records()) == ["e0", "e1", "e2"]

    receiver.delay_responses(0)
    started = time.monotonic()
    export_logs(receiver.target, logs_request("fast"))
    assert time.monotonic() - started < 0.25


# -- TLS -------------------------------------------------------------------

def test_tls_handshake_with_generated_ca(certs):
    with OtlpReceiver(tls=certs.server_tls()) as rx:
        assert rx.endpoint == f"https://localhost:{rx.port}"
        trusted = grpc.ssl_channel_credentials(root_certificates=certs.ca_cert.pem)
        export_logs(rx.target, logs_request("by-name"), trusted)
        export_logs(f"127.0.0.1:{rx.port}", logs_request("by-ip"), trusted)
        assert failure(lambda: export_logs(rx.target, logs_request("plaintext"))).code() == UNAVAILABLE
        wrong_ca = grpc.ssl_channel_credentials(root_certificates=certs.other_ca_cert.pem)
        assert failure(lambda: export_logs(rx.target, logs_request("wrong-ca"), wrong_ca)).code() == UNAVAILABLE
        assert [r.event_name for r in rx.log_records()] == ["by-name", "by-ip"]


def test_mtls_requires_a_client_cert_from_the_ca(certs):
    with OtlpReceiver(tls=certs.server_tls(mtls=True)) as rx:
        good = grpc.ssl_channel_credentials(certs.ca_cert.pem, certs.client_key.pem, certs.client_cert.pem)
        export_logs(rx.target, logs_request("mtls"), good)

        no_cert = grpc.ssl_channel_credentials(certs.ca_cert.pem)
        assert failure(lambda: export_logs(rx.target, logs_request("no-cert"), no_cert)).code() == UNAVAILABLE
        rogue = grpc.ssl_channel_credentials(certs.ca_cert.pem, certs.other_client_key.pem,
                                             certs.other_client_cert.pem)
        assert failure(lambda: export_logs(rx.target, logs_request("rogue"), rogue)).code() == UNAVAILABLE
        assert [r.event_name for r in rx.log_records()] == ["mtls"]


def test_cert_files_match_their_bytes(certs):
    for name in ("ca_cert", "server_cert", "server_key", "client_cert", "client_key", "other_ca_cert"):
        pem_file = getattr(certs, name)
        assert pem_file.path.read_bytes() == pem_file.pem and pem_file.pem.startswith(b"-----BEGIN ")
    assert certs.server_key.path.stat().st_mode & 0o077 == 0


# -- rotel relay -----------------------------------------------------------

def assert_same_fields(got, sent) -> None:
    """Every field of the message type, one by one; sent must set them all."""
    fields = [f.name for f in sent.DESCRIPTOR.fields]
    assert sorted(f.name for f, _ in sent.ListFields()) == sorted(fields), "test data must set every field"
    for name in fields:
        assert getattr(got, name) == getattr(sent, name), f"{type(sent).__name__}.{name} changed"


@pytest.mark.parametrize("batch_timeout", [None, "20ms"], ids=["unbatched", "batched"])
def test_rotel_relays_logs_and_spans_unchanged(receiver, batch_timeout):
    sent_logs, sent_traces = logs_request("tcp.session.end", "tcp.session.reset"), traces_request("tcp")
    with RotelRelay(receiver.port, batch_timeout=batch_timeout) as relay:
        assert relay.endpoint == f"http://127.0.0.1:{relay.port}" and relay.port != receiver.port
        export_logs(relay.target, sent_logs)
        export_traces(relay.target, sent_traces)
        assert receiver.wait_for(lambda r: len(r.log_records()) == 2 and len(r.spans()) == 1, timeout=5), \
            relay.output()

    sent_resource_logs = sent_logs.resource_logs[0]
    for (resource, scope, record), sent in zip(receiver.log_records_with_resource(),
                                               sent_resource_logs.scope_logs[0].log_records):
        assert_same_fields(record, sent)
        assert resource.attributes == sent_resource_logs.resource.attributes
        assert resource.dropped_attributes_count == sent_resource_logs.resource.dropped_attributes_count
        assert_same_fields(scope, sent_resource_logs.scope_logs[0].scope)
    (resource, scope, span), = receiver.spans_with_resource()
    sent_span = sent_traces.resource_spans[0].scope_spans[0].spans[0]
    assert_same_fields(span, sent_span)
    assert_same_fields(span.events[0], sent_span.events[0])
    assert_same_fields(span.links[0], sent_span.links[0])
    assert resource == sent_traces.resource_spans[0].resource
    assert receiver.logs == [sent_logs] and receiver.traces == [sent_traces]  # schema URLs too
    assert receiver.metadata[0]["user-agent"].startswith("Rotel")


def test_rotel_retries_injected_failures(receiver):
    receiver.fail_next(UNAVAILABLE, retry_after=0.1, signal="logs")
    with RotelRelay(receiver.port) as relay:
        export_logs(relay.target, logs_request("retried"))  # rotel answers before forwarding
        assert receiver.wait_for(lambda r: len(r.log_records()) == 1, timeout=5), relay.output()
    assert receiver.calls == {("logs", "UNAVAILABLE"): 1, ("logs", "ok"): 1}


def test_rotel_startup_failure_reports_its_output(receiver):
    relay = RotelRelay(receiver.port, extra_args=("--no-such-flag",))
    with pytest.raises(RuntimeError, match="no-such-flag"):
        relay.start()
    assert relay.proc is None
