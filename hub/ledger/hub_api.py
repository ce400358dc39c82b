"""The CLI's client of a running hub's HTTP API (``smartshelf ledger import --url``): the API client's token, TLS
(``--cafile``), one POST, and every way it can fail as one line saying what is wrong and what to do.

* **TLS.** The hub serves its page and API over HTTPS with the shop's certificate or, by default, a self-signed one it
  generates beside its ledger (``<ledger db>.tls/cert.pem``; on a Pi set up by ``hub install-service``
  ``/var/lib/smartshelf/smartshelf.db.tls/cert.pem``) and whose SHA-256 it logs at every start (``status page
  certificate SHA-256 AB:CD:...``). A client trusts it with ``--cafile``. Without it, the standard library's
  ``SSLCertVerificationError`` (``certificate verify failed: self-signed certificate``) becomes
  ``ClientRefused``: "the hub's certificate is not trusted ...: give it with --cafile PATH", with the SHA-256 of the
  certificate the hub presented (read on a second connection that sends nothing) to compare with the hub's log. A
  ``--cafile`` that is not the hub's certificate, a host name the certificate does not cover (it lists the names it
  does), an expired certificate: each its own line.
* **HTTP errors** (``HubError``) carry the status, its reason phrase and the hub's messages (``{"errors": [{"field",
  "message"}]}``): ``HTTP 403 Forbidden: scope: this needs the scope 'sales'; client wms has receipts``. The hub's
  HTTP/1.1 server (hypercorn on h11) sends its status lines without a reason phrase (``HTTP/1.1 403``; HTTP/1.1
  makes it optional): the standard phrase of the status is shown then.
* **No answer** (``HubUnreachable``: nothing listening, an unknown host, a timeout, a TLS handshake that fails).
* **Where the token goes.** The request goes to ``--url`` itself: no proxy from the environment (``https_proxy``
  would carry the bearer token, and for a plain-HTTP loopback URL ``http_proxy`` would carry it in clear text) and
  no redirect (urllib would follow a 301-303 to any host, as a GET with the token): a redirect is ``HubUnreachable``
  naming where it pointed. An answer that is not the hub's import report is refused the same way.
"""

from __future__ import annotations

import hashlib
import http
import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

TOKEN_ENV = "SMARTSHELF_API_TOKEN"
PI_CERT = Path("/var/lib/smartshelf/smartshelf.db.tls/cert.pem")  # hub install-service's ledger, its certificate
LOG_LINE = "status page certificate SHA-256"  # what the hub logs at every start (hub.service.lifecycle)
_HOST_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


class ClientRefused(Exception):
    """The request cannot be made as given (a ``--cafile`` that is no certificate, a hub certificate this client does
    not trust): ``str()`` is the one line to show; nothing was sent."""


class HubUnreachable(Exception):
    """No answer from the hub (nothing listening, an unknown host, a timeout, a failed TLS handshake)."""


class HubError(Exception):
    """The hub answered with an HTTP error status: ``status``, ``phrase`` and its ``problems`` (field, message)."""

    def __init__(self, url: str, status: int, phrase: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(url, status)
        self.url, self.status, self.phrase, self.problems = url, status, phrase, problems

    def detail(self) -> str:
        """The hub's messages, ``field: message`` joined by ``; `` (or that it gave none)."""
        return "; ".join(_problem(p) for p in self.problems) or "the hub gave no message"

    def __str__(self) -> str:
        return f"{self.url}: HTTP {self.status} {self.phrase}".rstrip() + f": {self.detail()}"


@dataclass(frozen=True, slots=True)
class Presented:
    """The certificate a server presented: its SHA-256 (``AB:CD:...``, as the hub logs it) and the names it covers."""

    fingerprint: str
    names: tuple[str, ...]


def read_token(token_file: Path | None) -> str:
    """The API client's token: the first line of ``token_file``, else ``$SMARTSHELF_API_TOKEN``; "" when neither has
    one (OSError when the file cannot be read)."""
    if token_file is not None:
        return token_file.read_text().strip()
    return os.environ.get(TOKEN_ENV, "").strip()


def client_context(cafile: Path | None) -> ssl.SSLContext:
    """The TLS context: the system's authorities, or only ``cafile`` (the hub's own certificate)."""
    if cafile is None:
        return ssl.create_default_context()
    hint = "give the hub's certificate, <ledger db>.tls/cert.pem"
    try:
        return ssl.create_default_context(cafile=str(cafile))
    except FileNotFoundError:
        raise ClientRefused(f"--cafile {cafile}: no such file ({hint})") from None
    except ssl.SSLError:
        raise ClientRefused(f"--cafile {cafile}: not a PEM certificate ({hint})") from None
    except OSError as exc:
        raise ClientRefused(f"--cafile {cafile}: cannot be read ({exc.strerror or exc})") from None


def post(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str],
    tls: ssl.SSLContext,
    timeout: float,
    cafile: Path | None = None,
    local_cert: Path | None = None,
) -> Any:
    """POST ``body`` to ``url`` and return the hub's JSON answer; ``HubError`` (an error status), ``ClientRefused`` (a
    certificate not trusted: ``cafile`` as given, ``local_cert`` the hub certificate on this machine, for the hint) or
    ``HubUnreachable``, each with its one line."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls), _NoRedirect()
    )
    try:
        with opener.open(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location", "?") if exc.headers is not None else "?"
            exc.close()
            raise HubUnreachable(
                f"{url.split('?', 1)[0]}: answered HTTP {exc.code} {_phrase(exc)}, a redirect to {where}: not followed"
                " (the token goes only to --url): give the hub's own address with --url"
            ) from None
        raise HubError(url.split("?", 1)[0], exc.code, _phrase(exc), _problems(exc)) from None
    except urllib.error.URLError as exc:
        raise _failure(url, exc.reason, timeout, cafile, local_cert) from None
    except (OSError, http.client.HTTPException) as exc:  # a timeout or a reset while reading the answer
        raise _failure(url, exc, timeout, cafile, local_cert) from None
    except ValueError as exc:
        raise HubUnreachable(f"{url}: the answer is not the hub's JSON ({exc}): is --url the hub's address?") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is not followed: urllib raises it as an ``HTTPError``."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _phrase(exc: urllib.error.HTTPError) -> str:
    reason = exc.reason if isinstance(exc.reason, str) else ""
    if reason.strip():
        return reason.strip()
    try:
        return http.HTTPStatus(exc.code).phrase
    except ValueError:
        return ""


def _problems(exc: urllib.error.HTTPError) -> list[dict[str, Any]]:
    """The hub's ``errors``; a body that is not its JSON becomes one message (its first line), an empty one none."""
    try:
        raw = exc.read()
    except OSError:
        return []
    try:
        errors = json.loads(raw).get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, list):
        return [e if isinstance(e, dict) else {"message": str(e)} for e in errors]
    text = raw.decode("utf-8", "replace").strip()
    ctype = exc.headers.get("Content-Type", "") if exc.headers is not None else ""
    if not text or "html" in ctype:
        return []
    return [{"message": text.splitlines()[0][:200]}]


def _problem(p: dict[str, Any]) -> str:
    field, message = p.get("field"), p.get("message")
    return f"{field}: {message}" if field else str(message)


def _failure(
    url: str, reason: object, timeout: float, cafile: Path | None, local_cert: Path | None
) -> ClientRefused | HubUnreachable:
    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}/"
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return ClientRefused(f"{origin}: {_untrusted(reason, host, port, timeout, cafile, local_cert)}")
    if isinstance(reason, TimeoutError):
        return HubUnreachable(
            f"{origin}: no answer within {timeout:g} s (--timeout): what reached the hub may still be written;"
            " sending it again is safe (what is already in the ledger is a duplicate)"
        )
    if isinstance(reason, ssl.SSLError):
        return HubUnreachable(
            f"{origin}: the TLS handshake failed ({reason.reason or reason}): is {port} the hub's HTTPS port"
            " ([web] port), and does the hub serve TLS ([web] tls)?"
        )
    if isinstance(reason, ConnectionRefusedError):
        return HubUnreachable(
            f"{origin}: nothing answers there (connection refused): is the hub running, with [web] port = {port}?"
        )
    if isinstance(reason, socket.gaierror):
        return HubUnreachable(f"{origin}: unknown host {host!r} ({reason.strerror or reason})")
    if isinstance(reason, ConnectionError | http.client.HTTPException):
        return HubUnreachable(
            f"{origin}: the connection ended without an answer ({reason or type(reason).__name__}): is {port} the"
            f" hub's [web] port, and is the scheme right ({parts.scheme}://)?"
        )
    if isinstance(reason, OSError):
        return HubUnreachable(f"{origin}: {reason.strerror or reason}")
    return HubUnreachable(f"{origin}: {reason}")


def _untrusted(
    err: ssl.SSLCertVerificationError,
    host: str,
    port: int,
    timeout: float,
    cafile: Path | None,
    local_cert: Path | None,
) -> str:
    """What is wrong with the hub's certificate, and the fix, as one line (after the hub's address)."""
    presented = presented_certificate(host, port, timeout)
    fp = f", SHA-256 {presented.fingerprint}" if presented is not None else ""
    what = err.verify_message or str(err)
    compare = f"its SHA-256 is the '{LOG_LINE}' line of the hub's log"
    if err.verify_code in _HOST_MISMATCH:
        names = ", ".join(presented.names) if presented is not None and presented.names else "other names"
        return f"the hub's certificate is not valid for {host} (it names {names}): use one of those in --url"
    if err.verify_code == _EXPIRED:
        return (
            f"the hub's certificate has expired{fp}: renew it (the hub renews its own self-signed one when it"
            " starts: restart it, then give the new <ledger db>.tls/cert.pem with --cafile)"
        )
    if cafile is not None:
        return (
            f"the hub's certificate ({what}{fp}) is not the one in --cafile {cafile}: give the hub's current"
            f" <ledger db>.tls/cert.pem ({compare})"
        )
    where = str(local_cert) if local_cert is not None else f"<ledger db>.tls/cert.pem (on a Pi: {PI_CERT})"
    return (
        f"the hub's certificate is not trusted ({what}{fp}): give it with --cafile {where}, the self-signed"
        f" certificate the hub keeps beside its ledger ({compare})"
    )


def presented_certificate(host: str, port: int, timeout: float) -> Presented | None:
    """The certificate ``host:port`` presents, read without checking it (nothing is sent); None if it cannot be."""
    try:
        der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, port), timeout=min(timeout, 10.0)))
    except (OSError, ValueError):
        return None
    fingerprint = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))
    names: list[str] = []
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [*san.value.get_values_for_type(x509.DNSName), *map(str, san.value.get_values_for_type(x509.IPAddress))]
    except (ValueError, x509.ExtensionNotFound):
        pass
    return Presented(fingerprint, tuple(names))
