"""What the real agent trusts for TLS, and headers as the collector gets them (issue 17)."""

from __future__ import annotations

import ssl
import time

from ..otlp_receiver import OtlpReceiver

FAST = ("--flush-interval", "0.2")
SECRET = "s3cr3t-tls-token"


def system_bundle() -> bytes:
    with open(ssl.get_default_verify_paths().openssl_cafile, "rb") as f:
        return f.read()


def export_sessions(traffic, start_agent, endpoint: str, count: int, *extra: str, env: dict):
    server, port = traffic.server(name="tl-server", count=count)
    agent = start_agent("--format", "none", "--otlp-endpoint", endpoint, "-L", str(port), "--signals", "logs",
                        *FAST, *extra, env=env)
    traffic.client(name="tl-client", port=port, count=count).events()
    server.events()
    return agent


def test_a_ca_added_to_the_bundle_ssl_cert_file_names_is_trusted(traffic, start_agent, certs, tmp_path):
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(system_bundle() + certs.ca_cert.pem)
    # gRPC's own variable names an unrelated CA: it must not be what decides.
    env = {"SSL_CERT_FILE": str(bundle), "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certs.other_ca_cert.path)}
    with OtlpReceiver(tls=certs.server_tls()) as rx:
        agent = export_sessions(traffic, start_agent, rx.endpoint, 2, env=env)
        assert rx.wait_for(lambda r: len(r.log_records()) == 2)
        agent.stop()
    assert agent.summary()["logs"]["exported"] == 2


def test_only_the_system_bundle_is_trusted_not_grpcs_roots(traffic, start_agent, certs):
    # The collector's CA is where gRPC would look for its default roots, and nowhere in the
    # system bundle: the agent refuses the collector.
    env = {"SSL_CERT_FILE": ssl.get_default_verify_paths().openssl_cafile,
           "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certs.ca_cert.path)}
    with OtlpReceiver(tls=certs.server_tls()) as rx:
        agent = export_sessions(traffic, start_agent, rx.endpoint, 2, "--retry-max-elapsed", "0", env=env)
        time.sleep(1.5)
        agent.stop()
        assert rx.log_records() == []
    assert agent.summary()["logs"]["exported"] == 0 and agent.summary()["logs"]["dropped"] == 2


def test_bin_headers_reach_the_collector_as_bytes(traffic, start_agent, receiver):
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=t1,x-token-bin=AP9zM2NyM3Q"}  # b"\x00\xffs3cr3t", unpadded
    agent = export_sessions(traffic, start_agent, receiver.endpoint, 1, env=env)
    assert receiver.wait_for(lambda r: len(r.log_records()) == 1)
    agent.stop()
    assert receiver.metadata[0]["x-token-bin"] == b"\x00\xffs3cr3t"
    assert receiver.metadata[0]["x-tenant"] == "t1"
    assert agent.summary()["logs"]["exported"] == 1


def test_headers_in_plain_text_to_another_host_are_warned_about_once(start_agent):
    # The warning comes at start, from the settings: no collector needs to answer.
    # 192.0.2.1 (TEST-NET-1) stands for a collector on another host.
    env = {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization={SECRET}"}
    agent = start_agent("--format", "none", "--otlp-endpoint", "http://192.0.2.1:4317", "-L", "9",
                        "--shutdown-timeout", "0", env=env)
    returncode, _, stderr = agent.stop()
    assert returncode == 0, stderr
    warning = "otel-tcplife: warning: OTLP headers are sent in plain text to 192.0.2.1:4317\n"
    assert stderr.count(warning) == 1  # once, not once per signal
    assert SECRET not in stderr
