"""The status page's certificate: the operator's (``[web] certificate`` / ``private_key``) or, when none is given, a
self-signed one generated on first start for the hub's host names and addresses and kept beside the ledger.

``server_context(cert, key)`` is the standard library's ``ssl.SSLContext`` for serving (TLS 1.2 and up, HTTP/1.1 by
ALPN). ``fingerprint(cert)`` is the SHA-256 fingerprint staff compare with what their browser shows the first time
(one line in the hub's log at every start).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.private_files import PRIVATE_DIR, ExposedSecret, check_private, make_private_dirs, open_private

log = logging.getLogger(__name__)

SELF_SIGNED_DAYS = 825  # what browsers accept for a leaf certificate
RENEW_BEFORE_DAYS = 30  # a generated certificate this close to its end is generated again at start


class TlsError(Exception):
    """A certificate or key that cannot be used: the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certificate: Path
    private_key: Path
    generated: bool  # a self-signed certificate of the hub's own (not the operator's)


def self_signed_paths(ledger_path: Path) -> TlsFiles:
    """Where the generated certificate lives: beside the ledger (``<db>.tls/cert.pem``, ``key.pem``)."""
    folder = ledger_path.with_name(ledger_path.name + ".tls")
    return TlsFiles(folder / "cert.pem", folder / "key.pem", generated=True)


def host_names(bind_host: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the hub is reached by: its host name, its FQDN, ``<host>.local`` (mDNS), localhost,
    the loopback addresses, the bound address when it is one, and the addresses its name resolves to."""
    names: list[str] = []
    addresses: list[str] = []

    def add_name(name: str) -> None:
        name = name.strip().rstrip(".").lower()
        if name and name not in names and not _is_ip(name):
            names.append(name)

    def add_address(text: str) -> None:
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            if not ip.is_unspecified and str(ip) not in addresses:
                addresses.append(str(ip))

    host = socket.gethostname()
    add_name(host)
    with contextlib.suppress(OSError):
        add_name(socket.getfqdn())
    add_name(f"{host.split('.', 1)[0]}.local")
    add_name("localhost")
    add_address("127.0.0.1")
    add_address("::1")
    if _is_ip(bind_host):
        add_address(bind_host)
    else:
        add_name(bind_host)
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
            add_address(str(info[4][0]))
    return names, addresses


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def ensure_self_signed(files: TlsFiles, names: Iterable[str], addresses: Iterable[str]) -> bool:
    """Generate the certificate and key unless a usable pair is there (not ending within 30 days, naming every one
    of ``names``: a renamed hub gets a new one; addresses may change with DHCP and do not count); True when a new
    pair was written. The key file is created 0600 in a 0700 folder before a byte is written."""
    if files.certificate.exists() and files.private_key.exists():
        try:
            cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        except ValueError as exc:
            raise TlsError(
                f"{files.certificate}: not a PEM certificate ({exc}); delete it to generate a new one"
            ) from None
        names = list(names)
        left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        try:
            covered = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                          .get_values_for_type(x509.DNSName))  # fmt: skip
        except x509.ExtensionNotFound:
            covered = set()
        missing = [n for n in names if n not in covered]
        if left > datetime.timedelta(days=RENEW_BEFORE_DAYS) and not missing:
            return False
        why = f"does not name {', '.join(missing)}" if missing else f"ends {cert.not_valid_after_utc.date()}"
        log.warning("web: the self-signed certificate %s %s: generating a new one (staff see a new fingerprint)",
                    files.certificate, why)  # fmt: skip
    folder = files.certificate.parent
    make_private_dirs(folder)
    os.chmod(folder, PRIVATE_DIR)
    key = ec.generate_private_key(ec.SECP256R1())
    dns = [x509.DNSName(n) for n in names]
    ips = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (list(names) or ["smartshelf-hub"])[0][:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName([*dns, *ips]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(files.private_key, key_pem, 0o600)
    _write_private(files.certificate, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = open_private(tmp)
    os.fchmod(fd, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_key_file(path: Path) -> None:
    """The private key must not be open to other users (``hub.private_files``' rule: refused with one line saying
    the fix; root's file that only the hub's group may read is accepted, as install-service lays files out)."""
    try:
        check_private(path, "the status page's TLS private key")
    except ExposedSecret as exc:
        raise TlsError(str(exc)) from None
    except OSError as exc:
        raise TlsError(f"{path}: cannot read the private key ({exc.strerror})") from None


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The standard library's server context: TLS 1.2+, the certificate chain and key, ALPN http/1.1."""
    check_key_file(files.private_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(files.certificate), str(files.private_key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"{files.certificate} / {files.private_key}: cannot be used as the page's certificate ({exc})"
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def fingerprint(certificate: Path) -> str:
    """SHA-256 of the certificate (DER), as browsers show it: ``AB:CD:...``."""
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"{certificate}: cannot read the certificate ({exc})") from None
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
