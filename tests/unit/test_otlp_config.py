"""OTLP settings from flags and OTEL_EXPORTER_OTLP_* variables; errors never leak secrets."""

from __future__ import annotations

import os
import ssl

import pytest

from otel_tcplife import otlp_config
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
    ("HTTPS://Collector.Example:443/ignored/path", ("collector.example:443", True)),
    ("http://otel_collector", ("otel_collector:4317", False)),  # container names may have _
    ("http://10.0.0.1", ("10.0.0.1:4317", False)),
])
def test_endpoints(text, expected):
    assert parse_endpoint(text, "test") == expected


@pytest.mark.parametrize("text,message", [
    ("ftp://host:1", "scheme must be http or https"),
    ("http://host:99999", "bad port"),
    ("http://:4317", "no host"),
    (f"https://user:{SECRET}@host:4317", "credentials in the URL"),
    (f"https://user:{SECRET}@[::1:99999", "credentials in the URL"),  # before anything echoes it
    ("garbage", "expected http://host:port, https://host:port or host:port"),
    ("localhost", "expected http://host:port"),
    ("http://[::1", "malformed URL"),
    ("[::1", "malformed URL"),
    ("http://host:0", "bad port"),
    ("http://host:-1", "bad port"),
    ("http://host name:1", "invalid host name"),
    ("http://-host:1", "invalid host name"),
    ("http://h\udcff:1", "invalid host name"),  # not UTF-8 in the environment
    ("http://bücher.example:1", "invalid host name"),  # IDNs go in punycode
    ("http://300.1.1.1:1", "invalid IPv4 address"),
    ("http://[::g]:1", "malformed URL"),
    ("[::g]:1", "malformed URL"),
])
def test_bad_endpoints(text, message):
    with pytest.raises(UsageError) as exc:
        parse_endpoint(text, "--otlp-endpoint")
    assert message in str(exc.value)
    assert SECRET not in str(exc.value)


def test_headers_are_url_decoded_and_keys_lowercased():
    assert parse_headers("Api-Key=a%20b, x-tenant = t1", "h") == [("api-key", "a b"), ("x-tenant", "t1")]


def test_printable_ascii_header_values_pass():
    value = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",%")  # all but the separators
    assert parse_headers(f"x-all={value},x-empty=", "h") == [("x-all", value.strip()), ("x-empty", "")]


def test_bin_header_values_are_base64_decoded():
    # gRPC sends -bin values base64-encoded: what is given is that encoding, padded or not.
    assert parse_headers("x-bin=aGVsbG8=,y-bin=aGVsbG8,z-bin=AP8%3D", "h") == [
        ("x-bin", b"hello"), ("y-bin", b"hello"), ("z-bin", b"\x00\xff")]


@pytest.mark.parametrize("text,problem", [
    (f"x-bin=!!!{SECRET}", "a -bin header's value must be base64"),
    ("x-bin=a", "a -bin header's value must be base64"),
    ("x-bin=aGVs-G8_", "a -bin header's value must be base64"),  # the URL-safe alphabet is not gRPC's
    ("x-bin=\u00e9\u00e9\u00e9\u00e9", "a -bin header's value must be base64"),
    (f"x-key={SECRET}%09tab", "the value must be printable ASCII"),
    (f"x-key={SECRET}%0D%0Ainjected: 1", "the value must be printable ASCII"),
    (f"x-key={SECRET}%7F", "the value must be printable ASCII"),
    (f"x-key={SECRET}\u00e9", "the value must be printable ASCII"),
    (f"x-key={SECRET}%C3%A9", "the value must be printable ASCII"),  # percent-encoded UTF-8 is still not ASCII
    (f"x-key={SECRET}%FF", "the value must be printable ASCII"),
    (f"x-key={SECRET}\udcff", "the value must be printable ASCII"),  # os.environ's escape for byte 0xff
    (f"x-key={SECRET}\x00", "the value must be printable ASCII"),
])
def test_header_values_grpc_would_refuse_name_the_key_only(text, problem):
    with pytest.raises(UsageError) as exc:
        parse_headers(text, "OTEL_EXPORTER_OTLP_HEADERS")
    message = str(exc.value)
    assert message.startswith("invalid header 'x-") and problem in message
    assert "in OTEL_EXPORTER_OTLP_HEADERS" in message
    assert SECRET not in message and "!!!" not in message


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
    assert resolve(OtlpFlags(endpoint="http://host:1", insecure=True), "logs", {}).secure is False
    assert resolve(OtlpFlags(endpoint="host:1"), "logs", {"OTEL_EXPORTER_OTLP_INSECURE": "TRUE"}).secure is False
    assert resolve(OtlpFlags(endpoint="host:1"), "logs", {"OTEL_EXPORTER_OTLP_INSECURE": "False"}).secure is True


@pytest.mark.parametrize("value", ["maybe", "1", "0", "yes", "no", "on", "\udcff"])
def test_insecure_is_true_or_false_only(value):
    # The specification lets no value but "true" mean true; we refuse the rest rather than guess.
    env = {"OTEL_EXPORTER_OTLP_LOGS_INSECURE": value}
    with pytest.raises(UsageError, match="invalid OTEL_EXPORTER_OTLP_LOGS_INSECURE .*: expected true or false"):
        resolve(OtlpFlags(endpoint="host:1"), "logs", env)
    with pytest.raises(UsageError, match="expected true or false"):  # checked even where the scheme decides
        resolve(OtlpFlags(endpoint="https://host:1"), "logs", env)


@pytest.mark.parametrize("flags,env", [
    (OtlpFlags(endpoint="https://host:1", insecure=True), {}),
    (OtlpFlags(insecure=True), {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://host:1"}),
])
def test_insecure_flag_contradicting_https_is_refused(flags, env):
    with pytest.raises(UsageError, match=r"--otlp-insecure contradicts the https:// endpoint"):
        resolve(flags, "logs", env)


def test_headers_over_plain_text_are_warned_about_once_per_signal():
    headers = {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization={SECRET}"}
    plain = resolve(OtlpFlags(endpoint="http://collector.example:4317"), "logs", headers)
    assert plain.warnings == ("OTLP headers are sent in plain text to collector.example:4317",)
    insecure = resolve(OtlpFlags(endpoint="collector.example:4317", insecure=True), "logs", headers)
    assert insecure.warnings == plain.warnings
    assert resolve(OtlpFlags(endpoint="https://collector.example:4317"), "logs", headers).warnings == ()
    assert resolve(OtlpFlags(endpoint="http://collector.example:4317"), "logs", {}).warnings == ()  # no headers
    for loopback in ("http://127.0.0.1:4317", "http://[::1]:4317", "http://localhost:4317"):
        assert resolve(OtlpFlags(endpoint=loopback), "logs", headers).warnings == ()  # never leaves the host


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


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", "0", "-5", "3600001", "soon", "\udcff"])
def test_timeouts_that_are_not_finite_positive_and_sane_are_refused(value):
    with pytest.raises(UsageError, match="invalid OTEL_EXPORTER_OTLP_TIMEOUT .*: expected milliseconds, "
                                         "more than 0 and at most 3600000"):
        resolve(OtlpFlags(endpoint="http://h:1"), "logs", {"OTEL_EXPORTER_OTLP_TIMEOUT": value})


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), 0.0, -1.0, 3600.5])
def test_timeout_flag_out_of_range_is_refused(seconds):
    with pytest.raises(UsageError, match="invalid --otlp-timeout .*: expected seconds, more than 0 and at most 3600"):
        resolve(OtlpFlags(endpoint="http://h:1", timeout=seconds), "logs", {})


def test_timeouts_in_range():
    assert resolve(OtlpFlags(endpoint="http://h:1"), "logs", {"OTEL_EXPORTER_OTLP_TIMEOUT": "3600000"}).timeout == 3600
    assert resolve(OtlpFlags(endpoint="http://h:1", timeout=0.001), "logs", {}).timeout == 0.001
    assert resolve(OtlpFlags(endpoint="http://h:1"), "logs", {}).timeout == 10.0


def system_bundle() -> bytes:
    with open(ssl.get_default_verify_paths().openssl_cafile, "rb") as f:
        return f.read()


def test_tls_without_a_certificate_trusts_the_system_bundle_not_grpcs():
    settings = resolve(OtlpFlags(endpoint="https://h:1"), "logs", {})
    assert settings.root_certificates == system_bundle()
    assert resolve(OtlpFlags(endpoint="http://h:1"), "logs", {}).root_certificates is None  # no TLS, no read


def test_ssl_cert_file_names_the_bundle(tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings = resolve(OtlpFlags(endpoint="h:1"), "logs", {"SSL_CERT_FILE": str(bundle)})
    assert settings.root_certificates == bundle.read_bytes()
    with pytest.raises(UsageError, match=r"cannot read OTLP CA bundle \(SSL_CERT_FILE\) .*missing.pem: No such file"):
        resolve(OtlpFlags(endpoint="h:1"), "logs", {"SSL_CERT_FILE": str(tmp_path / "missing.pem")})
    # --otlp-certificate replaces the system bundle rather than adding to it
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n")
    assert resolve(OtlpFlags(endpoint="h:1", certificate=str(ca)), "logs",
                   {"SSL_CERT_FILE": str(bundle)}).root_certificates == ca.read_bytes()


def test_without_any_system_bundle_tls_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(otlp_config, "SYSTEM_CA_FILES", (str(tmp_path / "none.crt"),))
    monkeypatch.setattr(ssl, "get_default_verify_paths",
                        lambda: ssl.DefaultVerifyPaths(None, None, "SSL_CERT_FILE", str(tmp_path / "cert.pem"),
                                                       "SSL_CERT_DIR", str(tmp_path)))
    with pytest.raises(UsageError, match="no system CA bundle found: set SSL_CERT_FILE or give --otlp-certificate"):
        resolve(OtlpFlags(endpoint="https://h:1"), "logs", {})


def test_the_sender_passes_the_system_bundle_to_grpc(monkeypatch):
    import grpc

    from otel_tcplife.output.otlp import OtlpGrpcSender

    seen = {}

    def credentials(root_certificates=None, private_key=None, certificate_chain=None):
        seen["roots"] = root_certificates
        return grpc.local_channel_credentials()  # any credentials: no connection is made

    monkeypatch.setattr(grpc, "ssl_channel_credentials", credentials)
    OtlpGrpcSender(resolve(OtlpFlags(endpoint="https://h:1"), "logs", {}), "logs").close()
    assert seen["roots"] == system_bundle()
    # settings made by hand, without roots, get the system bundle too, not gRPC's roots.pem
    monkeypatch.setenv("SSL_CERT_FILE", ssl.get_default_verify_paths().openssl_cafile)
    OtlpGrpcSender(otlp_config.OtlpSettings(target="h:1", secure=True), "logs").close()
    assert seen["roots"] == system_bundle()


@pytest.mark.parametrize("what,flags", [
    ("OTLP certificate", lambda path: OtlpFlags(endpoint="https://h:1", certificate=path)),
    ("OTLP client key", lambda path: OtlpFlags(endpoint="https://h:1", client_key=path,
                                               client_certificate=os.devnull)),
    ("OTLP headers file", lambda path: OtlpFlags(endpoint="https://h:1", headers_file=path)),
])
def test_files_that_are_not_regular_are_refused_without_reading(what, flags, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(tmp_path), str(fifo)):  # a FIFO must not block the start either
        with pytest.raises(UsageError) as exc:
            resolve(flags(path), "logs", {})
        assert str(exc.value) == f"{what} {path} is not a regular file"


def test_files_over_the_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(otlp_config, "MAX_FILE_BYTES", 1024)
    big = tmp_path / "big.pem"
    big.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * 1024)
    with pytest.raises(UsageError, match=f"OTLP certificate {big} is larger than 0 MiB"):
        resolve(OtlpFlags(endpoint="https://h:1", certificate=str(big)), "logs", {})
    big.write_bytes(b"-----BEGIN " + b"A" * (1024 - 11))  # exactly the limit
    assert len(otlp_config.read_file(str(big), "OTLP certificate")) == 1024


def test_headers_file_must_be_utf8_text(tmp_path):
    binary = tmp_path / "headers"
    binary.write_bytes(b"authorization=" + SECRET.encode() + b"\xff\xfe")
    with pytest.raises(UsageError) as exc:
        resolve(OtlpFlags(endpoint="https://h:1", headers_file=str(binary)), "logs", {})
    assert str(exc.value) == f"OTLP headers file {binary} is not UTF-8 text"
    text = tmp_path / "headers.txt"
    text.write_text(f"authorization=Bearer%20{SECRET}\r\nx-bin=aGk=\r\n")
    assert resolve(OtlpFlags(endpoint="https://h:1", headers_file=str(text)), "logs", {}).headers == (
        ("authorization", f"Bearer {SECRET}"), ("x-bin", b"hi"))
