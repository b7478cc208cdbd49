"""The Resource every record carries.

Our defaults first; OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME, win over them. We read
those two ourselves (resource_env), not through the SDK's detector: a bad value is one line
and exit status 2 at start (check_resource_env), not unprefixed SDK warnings and a Resource
silently missing attributes. Text from the system (host name, machine id) that is not UTF-8
gets U+FFFD for each bad byte.

The OpenTelemetry and protobuf modules are imported where used: checking the environment at
start must not cost the table and NDJSON outputs their import time.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING, Iterable, Mapping
from urllib.parse import unquote

from . import __version__
from .errors import UsageError

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.sdk.resources import Resource

SCOPE_NAME = "otel_tcplife"
SCOPE_VERSION = __version__


def system_text(text: str) -> str:
    """Text from the system as valid UTF-8: each byte that is not becomes U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def machine_id(path: str = "/etc/machine-id") -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(256)  # 33 bytes; bounded whatever the file is
    except OSError:
        return None
    return data.decode("utf-8", "replace").strip() or None


def _utf8(var: str, text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # os.environ keeps bytes that are not UTF-8 as surrogates
        raise UsageError(f"{var} is not valid UTF-8") from None
    return text


def parse_resource_attributes(text: str, var: str = "OTEL_RESOURCE_ATTRIBUTES",
                              strict: bool = True) -> dict[str, str]:
    """`key=value,...` (W3C-baggage-like; empty entries skipped), values percent-decoded. Strict: a
    malformed entry is a UsageError that names the entry or key, never the value; otherwise it is
    skipped (a traced process's environment is not ours to refuse)."""
    attributes = {}
    for index, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            if not sep:
                raise UsageError(f"malformed {var}: entry {index} has no '='")
            if not key:
                raise UsageError(f"malformed {var}: entry {index} has an empty key")
            try:
                attributes[key] = unquote(value.strip(), errors="strict")
            except UnicodeDecodeError:
                raise UsageError(f"malformed {var}: the value of {key!r} is not UTF-8 once percent-decoded") from None
        except UsageError:
            if strict:
                raise
    return attributes


def resource_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The attributes OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME set, checked."""
    var = "OTEL_RESOURCE_ATTRIBUTES"
    attributes = parse_resource_attributes(_utf8(var, env.get(var, "")), var)
    if service_name := _utf8("OTEL_SERVICE_NAME", env.get("OTEL_SERVICE_NAME", "")):
        attributes["service.name"] = service_name
    return attributes


def check_resource_env(env: Mapping[str, str] = os.environ) -> None:
    """Raises UsageError for what build_resource would refuse; cheap, for start-up."""
    resource_env(env)


def build_resource(env: Mapping[str, str] = os.environ) -> Resource:
    from opentelemetry.sdk.resources import Resource

    return Resource(agent_attributes(env))


def agent_attributes(env: Mapping[str, str] = os.environ) -> dict[str, object]:
    """The agent's own Resource, as attributes (build_resource's, without the SDK's Resource class).
    The SDK's version from its package metadata: NDJSON and journald need no OpenTelemetry import."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        sdk_version = version("opentelemetry-sdk")
    except PackageNotFoundError:  # a package built without it: say nothing rather than something false
        sdk_version = None
    attributes = {
        # What the SDK's Resource.create adds; its resource detectors are not run.
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        **({"telemetry.sdk.version": sdk_version} if sdk_version else {}),
        "service.name": "otel-tcplife",
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid4()),
        "host.name": system_text(socket.gethostname()),
        "os.type": "linux",
    }
    host_id = machine_id()
    if host_id:
        attributes["host.id"] = host_id
    attributes.update(resource_env(env))
    return attributes


def any_value(value: object) -> common_pb2.AnyValue:
    from opentelemetry.proto.common.v1 import common_pb2

    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(v) for v in value]))
    return common_pb2.AnyValue(string_value=str(value))


def json_value(value: object) -> dict:
    """An AnyValue in OTLP/JSON: 64-bit integers as decimal strings."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [json_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(resource: Resource | Mapping[str, object] | Iterable[tuple[str, object]]) -> dict[str, object]:
    """A Resource's attributes: from the SDK's Resource, a mapping, or (key, value) pairs (identity.Resource)."""
    return dict(getattr(resource, "attributes", resource))


def resource_proto(resource: Resource | Mapping[str, object] | Iterable[tuple[str, object]]) -> resource_pb2.Resource:
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    return resource_pb2.Resource(attributes=[
        common_pb2.KeyValue(key=key, value=any_value(value)) for key, value in _attributes(resource).items()
    ])


def resource_json(resource: Resource | Mapping[str, object] | Iterable[tuple[str, object]]) -> dict:
    return {"attributes": [{"key": key, "value": json_value(value)} for key, value in _attributes(resource).items()]}


def scope_proto() -> common_pb2.InstrumentationScope:
    from opentelemetry.proto.common.v1 import common_pb2

    return common_pb2.InstrumentationScope(name=SCOPE_NAME, version=SCOPE_VERSION)


def scope_json() -> dict:
    return {"name": SCOPE_NAME, "version": SCOPE_VERSION}
