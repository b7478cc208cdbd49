"""The Resource from our defaults and OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME, checked by us."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from otel_tcplife import resource
from otel_tcplife.errors import UsageError
from otel_tcplife.resource import build_resource, check_resource_env, machine_id, resource_env, system_text


def test_environment_wins_over_defaults():
    env = {"OTEL_RESOURCE_ATTRIBUTES": " team = sre ,deployment.environment.name=a%2Cb%20c,,",
           "OTEL_SERVICE_NAME": "edge"}
    attributes = dict(build_resource(env).attributes)
    assert attributes["service.name"] == "edge"
    assert (attributes["team"], attributes["deployment.environment.name"]) == ("sre", "a,b c")
    assert attributes["os.type"] == "linux" and attributes["telemetry.sdk.language"] == "python"
    assert attributes["telemetry.sdk.name"] == "opentelemetry" and attributes["telemetry.sdk.version"]


def test_defaults_without_environment():
    attributes = dict(build_resource({}).attributes)
    assert attributes["service.name"] == "otel-tcplife"
    assert {"service.version", "service.instance.id", "host.name"} <= attributes.keys()


def test_service_name_beats_the_attribute():
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=a", "OTEL_SERVICE_NAME": "b"}
    assert resource_env(env) == {"service.name": "b"}


@pytest.mark.parametrize("env,message", [
    ({"OTEL_RESOURCE_ATTRIBUTES": "=,,x"}, "malformed OTEL_RESOURCE_ATTRIBUTES: entry 1 has an empty key"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "a=1,x"}, "malformed OTEL_RESOURCE_ATTRIBUTES: entry 2 has no '='"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "a=%FF"},
     "malformed OTEL_RESOURCE_ATTRIBUTES: the value of 'a' is not UTF-8 once percent-decoded"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "a=\udcff"}, "OTEL_RESOURCE_ATTRIBUTES is not valid UTF-8"),
    ({"OTEL_SERVICE_NAME": "edge\udcff"}, "OTEL_SERVICE_NAME is not valid UTF-8"),
])
def test_bad_environment_is_one_usage_error_and_no_sdk_warning(env, message, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UsageError) as exc:
        check_resource_env(env)
    assert str(exc.value) == message
    with pytest.raises(UsageError):
        build_resource(env)
    assert caplog.records == []


def test_checking_needs_no_opentelemetry_import():
    # check_resource_env runs at start for every format: the table must not pay for the SDK.
    code = ("import sys; from otel_tcplife.resource import check_resource_env; check_resource_env({}); "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'google'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


def test_system_text_replaces_what_is_not_utf8():
    assert system_text("host\udcff\udcfe") == "host\ufffd\ufffd"
    assert system_text("hôte") == "hôte"


def test_host_name_that_is_not_utf8(monkeypatch):
    monkeypatch.setattr(resource.socket, "gethostname", lambda: "box\udcff")
    attributes = build_resource({}).attributes
    assert attributes["host.name"] == "box\ufffd"
    resource.resource_proto(build_resource({})).SerializeToString()  # encodes


def test_machine_id_is_bounded_and_utf8(tmp_path):
    path = tmp_path / "machine-id"
    path.write_bytes(b"abc\xff\n")
    assert machine_id(str(path)) == "abc\ufffd"
    assert len(machine_id("/dev/zero")) == 256  # bounded, whatever the file is
    assert machine_id(str(tmp_path / "missing")) is None
