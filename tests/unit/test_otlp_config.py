"""OTLP settings from flags and OTEL_EXPORTER_OTLP_* variables; errors never leak secrets."""

from __future__ import annotations

import pytest

from otel_tcplife.errors import UsageError
from otel_tcplife.otlp_config import OtlpFlags, parse_endpoint, parse_headers, resolve

SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize("text,expected", [
    ("http://127.0.0.1:4317", ("127.0.0.1:4317", False)),
    ("https://collector.example:4318", ("collector.example:4318", True)),
    ("https://collector.example", ("collector.example:4317", True)),
    ("localhost:9999", ("localhost:9999", None)),
    ("http://[::1]:4317", ("[::1]:4317", False)),
    ("[::1]:4317", ("[::1]:4317", None)),
])
def test_endpoints(text, expected):
    assert parse_endpoint(text, "test") == expected


@pytest.mark.parametrize("text,message", [
    ("ftp://host:1", "scheme must be http or https"),
    ("http://host:99999", "bad port"),
    ("http://:4317", "no host"),
    (f"https://user:{SECRET}@host:4317", "credentials in the URL"),
])
def test_bad_endpoints(text, message):
    with pytest.raises(UsageError) as exc:
        parse_endpoint(text, "--otlp-endpoint")
    assert message in str(exc.value)
    assert SECRET not in str(exc.value)


def test_headers_are_url_decoded_and_keys_lowercased():
    assert parse_headers("Api-Key=a%20b, x-tenant = t1", "h") == [("api-key", "a b"), ("x-tenant", "t1")]


@pytest.mark.parametrize("text", [f"api-key{SECRET}", f"ok=1,{SECRET}", f"bad key={SECRET}"])
def test_malformed_headers_never_echo_values(text):
    with pytest.raises(UsageError) as exc:
        parse_headers(text, "OTEL_EXPORTER_OTLP_HEADERS")
    assert "malformed OTEL_EXPORTER_OTLP_HEADERS" in str(exc.value)
    assert SECRET not in str(exc.value)


def test_no_endpoint_means_no_export():
    assert resolve(OtlpFlags(), "logs", env={}) is None


def test_flag_beats_signal_variable_beats_generic():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:2"}
    assert resolve(OtlpFlags(), "logs", env).target == "generic:1"
    assert resolve(OtlpFlags(), "traces", env).target == "traces:2"
    assert resolve(OtlpFlags(endpoint="http://flag:3"), "traces", env).target == "flag:3"


def test_scheme_decides_tls_and_insecure_applies_without_one():
    assert resolve(OtlpFlags(endpoint="host:1"), "logs", {}).secure is True
    assert resolve(OtlpFlags(endpoint="host:1"), "logs", {"OTEL_EXPORTER_OTLP_INSECURE": "true"}).secure is False
    assert resolve(OtlpFlags(endpoint="https://host:1"), "logs", {"OTEL_EXPORTER_OTLP_INSECURE": "true"}).secure
    assert resolve(OtlpFlags(endpoint="host:1", insecure=True), "logs", {}).secure is False


def test_environment_settings():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:1",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{SECRET}",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "x-logs=1",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
    }
    logs = resolve(OtlpFlags(), "logs", env)
    traces = resolve(OtlpFlags(), "traces", env)
    assert logs.headers == (("x-logs", "1"),)  # the per-signal variable replaces the generic one
    assert traces.headers == (("authorization", f"Bearer {SECRET}"),)
    assert (traces.compression, traces.timeout) == ("gzip", 2.5)
    assert resolve(OtlpFlags(endpoint="http://h:1"), "logs", {}).compression == "none"  # the default
    assert SECRET not in repr(traces)


def test_unreadable_or_invalid_certificates(tmp_path):
    with pytest.raises(UsageError, match="cannot read OTLP certificate .*missing.pem"):
        resolve(OtlpFlags(endpoint="https://h:1", certificate=str(tmp_path / "missing.pem")), "logs", {})
    (tmp_path / "junk.pem").write_text(SECRET)
    with pytest.raises(UsageError) as exc:
        resolve(OtlpFlags(endpoint="https://h:1", certificate=str(tmp_path / "junk.pem")), "logs", {})
    assert "is not a PEM file" in str(exc.value) and SECRET not in str(exc.value)


def test_mtls_needs_key_and_certificate_and_tls(tmp_path):
    pem = tmp_path / "c.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(UsageError, match="both a client key and a client certificate"):
        resolve(OtlpFlags(endpoint="https://h:1", client_key=str(pem)), "logs", {})
    with pytest.raises(UsageError, match="plain-text"):
        resolve(OtlpFlags(endpoint="http://h:1", certificate=str(pem)), "logs", {})


def test_bad_compression_and_timeout():
    with pytest.raises(UsageError, match="compression"):
        resolve(OtlpFlags(endpoint="http://h:1"), "logs", {"OTEL_EXPORTER_OTLP_COMPRESSION": "br"})
    with pytest.raises(UsageError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
        resolve(OtlpFlags(endpoint="http://h:1"), "logs", {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"})
