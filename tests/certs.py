"""Throwaway TLS material for tests: two unrelated CAs, a server and client certificates.

Everything is EC P-256, PEM, valid for a week. The server certificate names
DNS "localhost" and IPs 127.0.0.1 and ::1, so clients may dial any of them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class PemFile:
    """A PEM file on disk and its content; usable wherever a path is expected."""

    path: Path
    pem: bytes

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class ServerTls:
    """What a gRPC server needs: its chain and key, and the CA that signs client certs (mTLS) or None."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None


@dataclass(frozen=True)
class TlsCerts:
    """Files written by make_certs(). other_* come from a CA unrelated to ca_*."""

    ca_cert: PemFile
    ca_key: PemFile
    server_cert: PemFile
    server_key: PemFile
    client_cert: PemFile
    client_key: PemFile
    other_ca_cert: PemFile
    other_ca_key: PemFile
    other_client_cert: PemFile  # signed by other_ca: a client cert the server must refuse
    other_client_key: PemFile

    def server_tls(self, *, mtls: bool = False) -> ServerTls:
        """Server credentials; with mtls the server requires a client cert signed by ca_cert."""
        return ServerTls(self.server_cert.pem, self.server_key.pem, self.ca_cert.pem if mtls else None)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otel-tcplife tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (_builder(common_name, key, _name(common_name))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _make_leaf(common_name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
               sans: list[x509.GeneralName], usage: x509.ObjectIdentifier,
               ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = _key()
    cert = (_builder(common_name, key, ca_cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _write(directory: Path, name: str, data: bytes, private: bool = False) -> PemFile:
    path = directory / name
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return PemFile(path, data)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certs(directory: Path) -> TlsCerts:
    """Generate the CAs and certificates into directory (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca("otel-tcplife test CA")
    other_ca = _make_ca("unrelated test CA")
    server = _make_leaf("localhost", ca,
                        [x509.DNSName("localhost"),
                         x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                         x509.IPAddress(ipaddress.ip_address("::1"))],
                        ExtendedKeyUsageOID.SERVER_AUTH)
    client = _make_leaf("otel-tcplife test client", ca, [x509.DNSName("client.test")],
                        ExtendedKeyUsageOID.CLIENT_AUTH)
    other_client = _make_leaf("unrelated test client", other_ca, [x509.DNSName("other-client.test")],
                              ExtendedKeyUsageOID.CLIENT_AUTH)

    def pair(name: str, cert_and_key: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]):
        cert, key = cert_and_key
        return (_write(directory, f"{name}.crt", _cert_pem(cert)),
                _write(directory, f"{name}.key", _key_pem(key), private=True))

    ca_cert, ca_key = pair("ca", ca)
    server_cert, server_key = pair("server", server)
    client_cert, client_key = pair("client", client)
    other_ca_cert, other_ca_key = pair("other-ca", other_ca)
    other_client_cert, other_client_key = pair("other-client", other_client)
    return TlsCerts(ca_cert=ca_cert, ca_key=ca_key, server_cert=server_cert, server_key=server_key,
                    client_cert=client_cert, client_key=client_key,
                    other_ca_cert=other_ca_cert, other_ca_key=other_ca_key,
                    other_client_cert=other_client_cert, other_client_key=other_client_key)
