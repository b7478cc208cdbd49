"""OTLP exporter settings from flags and the standard OTEL_EXPORTER_OTLP_* variables.

A flag beats a per-signal variable, which beats the generic one. Every problem
is a UsageError (one line, exit 2) that names the setting but never a header
value or file contents.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote, urlsplit

from .errors import UsageError

SIGNALS = ("logs", "traces")
DEFAULT_PORT = 4317
TRUE_VALUES = ("true", "1", "yes")
HEADER_KEY = re.compile(r"^[0-9a-z_.-]+$")  # gRPC metadata keys: lowercase token characters


@dataclass(frozen=True)
class OtlpSettings:
    """Where and how to export one signal. Header values are secrets: never print them."""

    target: str  # host:port for grpc
    secure: bool
    root_certificates: bytes | None = None  # None: the system's roots
    client_key: bytes | None = None
    client_certificate: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    compression: str = "none"  # none | gzip
    timeout: float = 10.0

    def __repr__(self) -> str:  # keep header values and keys out of any log
        return (f"OtlpSettings(target={self.target!r}, secure={self.secure}, "
                f"headers=<{len(self.headers)} hidden>, compression={self.compression!r})")


@dataclass(frozen=True)
class OtlpFlags:
    """The OTLP flags as given on the command line (None: not given)."""

    endpoint: str | None = None
    insecure: bool = False
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None
    headers_file: str | None = None
    compression: str | None = None
    timeout: float | None = None


def _env(env: Mapping[str, str], signal: str, name: str) -> tuple[str, str] | None:
    """(variable name, value) of the per-signal variable, else of the generic one."""
    for var in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = env.get(var)
        if value is not None and value.strip() != "":
            return var, value.strip()
    return None


def parse_endpoint(text: str, source: str) -> tuple[str, bool | None]:
    """-> (grpc target host:port, secure from the scheme or None when there is none)."""
    raw = text.strip()
    has_scheme = "://" in raw
    parts = urlsplit(raw if has_scheme else f"//{raw}")
    if has_scheme and parts.scheme not in ("http", "https"):
        raise UsageError(f"invalid OTLP endpoint {raw!r} ({source}): scheme must be http or https")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise UsageError(f"invalid OTLP endpoint {raw!r} ({source}): bad port") from None
    if not host:
        raise UsageError(f"invalid OTLP endpoint {raw!r} ({source}): no host")
    if parts.username or parts.password:
        raise UsageError(f"invalid OTLP endpoint ({source}): credentials in the URL are not allowed; use headers")
    target_host = f"[{host}]" if ":" in host else host
    secure = None if not has_scheme else parts.scheme == "https"
    return f"{target_host}:{port or DEFAULT_PORT}", secure


def parse_headers(text: str, source: str) -> list[tuple[str, str]]:
    """W3C-baggage-like `key=value,key2=value2`, values URL-encoded. Values are never echoed."""
    headers = []
    for index, item in enumerate(text.replace("\n", ",").split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key.strip()).lower()
        if not sep:
            raise UsageError(f"malformed {source}: entry {index} has no '='")
        if not HEADER_KEY.match(key):
            raise UsageError(f"malformed {source}: entry {index} has an invalid key")
        headers.append((key, unquote(value.strip())))
    return headers


def read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read OTLP {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise UsageError(f"OTLP {what} {path} is not a PEM file")
    return data


def resolve(flags: OtlpFlags, signal: str, env: Mapping[str, str] = os.environ) -> OtlpSettings | None:
    """Settings for one signal, or None when no endpoint is configured."""
    if flags.endpoint is not None:
        target, secure = parse_endpoint(flags.endpoint, "--otlp-endpoint")
    elif found := _env(env, signal, "ENDPOINT"):
        target, secure = parse_endpoint(found[1], found[0])
    else:
        return None

    insecure_env = _env(env, signal, "INSECURE")
    if flags.insecure:
        secure = False
    elif secure is None:  # no scheme: TLS unless told otherwise
        secure = not (insecure_env and insecure_env[1].lower() in TRUE_VALUES)

    def path(flag_value: str | None, name: str) -> str | None:
        if flag_value is not None:
            return flag_value
        found = _env(env, signal, name)
        return found[1] if found else None

    certificate = path(flags.certificate, "CERTIFICATE")
    client_key = path(flags.client_key, "CLIENT_KEY")
    client_certificate = path(flags.client_certificate, "CLIENT_CERTIFICATE")
    if (client_key is None) != (client_certificate is None):
        raise UsageError("OTLP mTLS needs both a client key and a client certificate")
    tls_files = certificate or client_key
    if tls_files and not secure:
        raise UsageError("OTLP certificates were given for a plain-text (insecure) endpoint")

    headers = []
    if found := _env(env, signal, "HEADERS"):
        headers += parse_headers(found[1], found[0])
    if flags.headers_file is not None:
        try:
            with open(flags.headers_file) as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read OTLP headers file {flags.headers_file}: {exc.strerror}") from None
        headers += parse_headers(text, f"headers file {flags.headers_file}")

    compression = flags.compression
    if compression is None:
        found = _env(env, signal, "COMPRESSION")
        compression = found[1].lower() if found else "none"
    if compression not in ("gzip", "none"):
        raise UsageError(f"invalid OTLP compression {compression!r}: expected gzip or none")

    timeout = flags.timeout
    if timeout is None:
        found = _env(env, signal, "TIMEOUT")
        if found:
            try:
                timeout = float(found[1]) / 1000  # milliseconds, per the specification
            except ValueError:
                raise UsageError(f"invalid {found[0]} {found[1]!r}: expected milliseconds") from None
    timeout = 10.0 if timeout is None else timeout
    if timeout <= 0:
        raise UsageError("OTLP timeout must be positive")

    return OtlpSettings(
        target=target,
        secure=secure,
        root_certificates=read_pem(certificate, "certificate") if certificate else None,
        client_key=read_pem(client_key, "client key") if client_key else None,
        client_certificate=read_pem(client_certificate, "client certificate") if client_certificate else None,
        headers=tuple(headers),
        compression=compression,
        timeout=timeout,
    )
