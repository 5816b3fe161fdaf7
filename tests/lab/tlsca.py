"""A throwaway CA and the certificates a TLS test needs, written into the test's directory.

EC P-256 keys, valid for one day; a server certificate names the IP addresses it serves
(subjectAltName), a client certificate carries the ``clientAuth`` usage. Key files are
written 0600, as an operator would. ``common_name=""`` issues a certificate with an empty
subject: what etcd's JSON gateway requires of client certificates under
``--client-cert-auth`` (it refuses a CN, CVE-2018-16886).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


class CA:
    def __init__(self, directory: Path, name: str = "vipcast test CA") -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = self._builder(self.name, self.key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
        self.cert = builder.sign(self.key, hashes.SHA256())
        self.file = directory / "ca.pem"
        self.file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self, subject: x509.Name, public: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(getattr(self, "name", subject))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID)
        )

    def issue(
        self, stem: str, common_name: str, *, ips: Sequence[str] = (), client: bool = False
    ) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        cn = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        subject = x509.Name(cn)
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if not client:  # a server's certificate serves its own client connections too
            usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = self._builder(subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage(usage), critical=False
        )
        if ips:
            names = [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = Pair(self.dir / f"{stem}.pem", self.dir / f"{stem}-key.pem")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(pair.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return pair
