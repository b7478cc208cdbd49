"""OTLP exporter settings from flags and the standard OTEL_EXPORTER_OTLP_* variables.

A flag beats a per-signal variable, which beats the generic one. Every problem
is a UsageError (one line, exit 2) that names the setting but never a header
value or file contents.

What is refused at start (each would otherwise fail every export, or worse):
- an endpoint that is not http(s)://host[:port] or host:port (a bare word has no port);
- a header gRPC would refuse: keys are lowercase [0-9a-z_.-]; values printable
  ASCII (0x20-0x7E) after percent-decoding; a key ending in -bin carries bytes,
  given base64-encoded (as gRPC puts them on the wire) and decoded here;
- INSECURE other than true/false, a timeout that is not in (0, 1 hour], a file
  that is not a regular file of at most MAX_FILE_BYTES, --otlp-insecure with https://.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote, urlsplit

from .config import OtlpSettings
from .errors import UsageError

SIGNALS = ("logs", "traces")
DEFAULT_PORT = 4317
BOOLEANS = {"true": True, "false": False}  # the specification allows no other true value
HEADER_KEY = re.compile(r"[0-9a-z_.-]+")  # gRPC metadata keys: lowercase token characters
HEADER_VALUE = re.compile(r"[\x20-\x7e]*")  # what gRPC accepts in a non-binary value
HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")  # _ too: container names have it
MAX_FILE_BYTES = 4 * 1024 * 1024  # far more than a CA bundle (Debian's: 220 KB), key or header list
MAX_TIMEOUT = 3600.0  # seconds; more is a mistake, not a timeout
# Where distributions keep their CA bundle, when OpenSSL's default file is missing (Go's list).
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Gentoo, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/pki/tls/cacert.pem",  # OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # CentOS, RHEL 7
    "/etc/ssl/cert.pem",  # Alpine
)


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


def _check_host(host: str) -> str | None:
    """What is wrong with a host name or IP literal, or None."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "invalid IPv6 address"
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "invalid IPv4 address"
    elif len(host) > 253 or not all(HOST_LABEL.fullmatch(label) for label in host.removesuffix(".").split(".")):
        return "invalid host name"
    return None


def parse_endpoint(text: str, source: str) -> tuple[str, bool | None]:
    """-> (grpc target host:port, secure from the scheme or None when there is none).

    The rule: scheme://host[:port] with scheme http or https (port 4317 by default), or
    host:port. A word alone (`garbage`) would be dialled as a TLS host forever: refused.
    """
    raw = text.strip()
    has_scheme = "://" in raw
    # Credentials first: the messages below echo the endpoint.
    authority = re.split(r"[/?#]", raw.partition("://")[2] if has_scheme else raw, maxsplit=1)[0]
    if "@" in authority:
        raise UsageError(f"invalid OTLP endpoint ({source}): credentials in the URL are not allowed; use headers")

    def bad(problem: str) -> UsageError:
        return UsageError(f"invalid OTLP endpoint {raw!r} ({source}): {problem}")

    try:
        parts = urlsplit(raw if has_scheme else f"//{raw}")
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for http://[::1
        raise bad(f"malformed URL ({exc})") from None
    if has_scheme and parts.scheme not in ("http", "https"):
        raise bad("scheme must be http or https")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise bad("bad port") from None
    if not host:
        raise bad("no host")
    if port == 0:
        raise bad("bad port")
    if not has_scheme and port is None:
        raise bad("expected http://host:port, https://host:port or host:port")
    if problem := _check_host(host):
        raise bad(problem)
    target_host = f"[{host}]" if ":" in host else host
    secure = None if not has_scheme else parts.scheme == "https"
    return f"{target_host}:{port or DEFAULT_PORT}", secure


def _header_value(key: str, value: str, source: str) -> str | bytes:
    """The value as gRPC takes it; errors name the key, never the value."""
    if key.endswith("-bin"):
        # gRPC puts binary values on the wire base64-encoded; that encoding is what is given.
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except ValueError:  # binascii.Error, or not ASCII
            raise UsageError(f"invalid header {key!r} in {source}: a -bin header's value must be base64") from None
    if not HEADER_VALUE.fullmatch(value):
        raise UsageError(f"invalid header {key!r} in {source}: the value must be printable ASCII "
                         "(for bytes, use a key ending in -bin and a base64 value)")
    return value


def parse_headers(text: str, source: str) -> list[tuple[str, str | bytes]]:
    """W3C-baggage-like `key=value,key2=value2`, values URL-encoded. Values are never echoed."""
    headers = []
    for index, item in enumerate(text.replace("\n", ",").split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key.strip()).lower()
        if not sep:
            raise UsageError(f"malformed {source}: entry {index} has no '='")
        if not HEADER_KEY.fullmatch(key):
            raise UsageError(f"malformed {source}: entry {index} has an invalid key")
        headers.append((key, _header_value(key, unquote(value.strip()), source)))
    return headers


def read_file(path: str, what: str) -> bytes:
    """A regular file of at most MAX_FILE_BYTES: a device, FIFO or directory given by
    mistake must neither hang the start nor fill memory (/dev/zero did)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{what} {path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return data


def read_pem(path: str, what: str) -> bytes:
    data = read_file(path, f"OTLP {what}")
    if b"-----BEGIN " not in data:
        raise UsageError(f"OTLP {what} {path} is not a PEM file")
    return data


def system_roots(env: Mapping[str, str] = os.environ) -> bytes:
    """The system's CA bundle, found as OpenSSL finds it: the file SSL_CERT_FILE names, else
    OpenSSL's default file, else a distribution's usual bundle. gRPC given no roots would
    trust its own bundled roots.pem instead (or GRPC_DEFAULT_SSL_ROOTS_FILE_PATH's)."""
    if env.get("SSL_CERT_FILE"):
        return read_pem(env["SSL_CERT_FILE"], "CA bundle (SSL_CERT_FILE)")
    import ssl  # only TLS needs it

    for path in (ssl.get_default_verify_paths().openssl_cafile, *SYSTEM_CA_FILES):
        if os.path.exists(path):
            return read_pem(path, "system CA bundle")
    raise UsageError("no system CA bundle found: set SSL_CERT_FILE or give --otlp-certificate")


def _boolean(found: tuple[str, str]) -> bool:
    var, value = found
    if value.lower() not in BOOLEANS:
        raise UsageError(f"invalid {var} {value!r}: expected true or false")
    return BOOLEANS[value.lower()]


def _is_loopback(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve(flags: OtlpFlags, signal: str, env: Mapping[str, str] = os.environ) -> OtlpSettings | None:
    """Settings for one signal, or None when no endpoint is configured."""
    if flags.endpoint is not None:
        source = "--otlp-endpoint"
        target, secure = parse_endpoint(flags.endpoint, source)
    elif found := _env(env, signal, "ENDPOINT"):
        source = found[0]
        target, secure = parse_endpoint(found[1], source)
    else:
        return None

    insecure_env = _env(env, signal, "INSECURE")
    env_insecure = _boolean(insecure_env) if insecure_env else False  # checked even when unused
    if flags.insecure:
        if secure:
            raise UsageError(f"--otlp-insecure contradicts the https:// endpoint ({source}): drop one of them")
        secure = False
    elif secure is None:  # no scheme: TLS unless told otherwise
        secure = not env_insecure
    # With a scheme, the scheme decides and OTEL_EXPORTER_OTLP_INSECURE is ignored (the specification).

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
        data = read_file(flags.headers_file, "OTLP headers file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"OTLP headers file {flags.headers_file} is not UTF-8 text") from None
        headers += parse_headers(text, f"headers file {flags.headers_file}")

    compression = flags.compression
    if compression is None:
        found = _env(env, signal, "COMPRESSION")
        compression = found[1].lower() if found else "none"
    if compression not in ("gzip", "none"):
        raise UsageError(f"invalid OTLP compression {compression!r}: expected gzip or none")

    timeout = flags.timeout
    if timeout is not None:
        if not 0 < timeout <= MAX_TIMEOUT:  # NaN fails both comparisons
            raise UsageError(f"invalid --otlp-timeout {timeout}: expected seconds, more than 0 and at most "
                             f"{MAX_TIMEOUT:.0f}")
    elif found := _env(env, signal, "TIMEOUT"):
        try:
            timeout = float(found[1]) / 1000  # milliseconds, per the specification
        except ValueError:
            timeout = float("nan")
        if not 0 < timeout <= MAX_TIMEOUT:
            raise UsageError(f"invalid {found[0]} {found[1]!r}: expected milliseconds, more than 0 and at most "
                             f"{MAX_TIMEOUT * 1000:.0f}")
    else:
        timeout = 10.0

    warnings = []
    if headers and not secure and not _is_loopback(target):
        warnings.append(f"OTLP headers are sent in plain text to {target}")

    return OtlpSettings(
        target=target,
        secure=secure,
        root_certificates=(read_pem(certificate, "certificate") if certificate else system_roots(env))
        if secure else None,
        client_key=read_pem(client_key, "client key") if client_key else None,
        client_certificate=read_pem(client_certificate, "client certificate") if client_certificate else None,
        headers=tuple(headers),
        compression=compression,
        timeout=timeout,
        warnings=tuple(warnings),
    )
