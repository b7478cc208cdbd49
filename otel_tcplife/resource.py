"""The Resource every record carries, built with the SDK's Resource machinery.

Our defaults first; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (read by
the SDK's OTELResourceDetector) win over them.
"""

from __future__ import annotations

import socket
import uuid

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from . import __version__

SCOPE_NAME = "otel_tcplife"
SCOPE_VERSION = __version__


def machine_id(path: str = "/etc/machine-id") -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def build_resource() -> Resource:
    defaults = {
        "service.name": "otel-tcplife",
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
        "os.type": "linux",
    }
    host_id = machine_id()
    if host_id:
        defaults["host.id"] = host_id
    return Resource.create(defaults).merge(OTELResourceDetector().detect())


def any_value(value: object) -> common_pb2.AnyValue:
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


def resource_proto(resource: Resource) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[
        common_pb2.KeyValue(key=key, value=any_value(value)) for key, value in resource.attributes.items()
    ])


def resource_json(resource: Resource) -> dict:
    return {"attributes": [{"key": key, "value": json_value(value)} for key, value in resource.attributes.items()]}


def scope_proto() -> common_pb2.InstrumentationScope:
    return common_pb2.InstrumentationScope(name=SCOPE_NAME, version=SCOPE_VERSION)


def scope_json() -> dict:
    return {"name": SCOPE_NAME, "version": SCOPE_VERSION}
