"""TLS for the broker and InfluxDB connections: one way to build the client's SSL context."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi


class TlsConfigError(ValueError):
    """A CA bundle, certificate or key that cannot be used."""


def client_context(
    what: str,
    ca_file: Path | str | None = None,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
    *,
    verify: bool = True,
) -> ssl.SSLContext:
    """The SSL context of a client connecting to ``what`` (e.g. ``"mqtt"``, named in errors).

    Without ``ca_file`` the server is checked against the system's trust store and certifi's
    bundle (the one httpx uses), so a public certificate works either way. ``cert_file`` (with
    ``key_file`` if the key is not in the same file) is presented to a server that asks for one.
    ``verify=False`` skips the server's certificate check; it is ignored when ``ca_file`` is set.
    """
    if key_file and not cert_file:
        raise TlsConfigError(f"{what}.key_file is set without {what}.cert_file")
    if ca_file:
        ca = _existing(what, "ca_file", ca_file)
        try:
            context = ssl.create_default_context(cafile=ca)
        except ssl.SSLError as exc:
            raise TlsConfigError(f"{what}.ca_file {ca} holds no usable PEM certificate: {exc.reason or exc}") from None
    else:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=certifi.where())
        if not verify:  # testing only: anyone in the middle can read the traffic
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if cert_file:
        cert = _existing(what, "cert_file", cert_file)
        key = _existing(what, "key_file", key_file) if key_file else None
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise TlsConfigError(
                f"{what}.cert_file {cert}{f' with key {key}' if key else ''} cannot be used: {exc.reason or exc}"
                " (a PEM certificate, and its private key in key_file or the same file)"
            ) from None
    return context


def _existing(what: str, setting: str, path: Path | str) -> str:
    if not Path(path).is_file():
        raise TlsConfigError(f"{what}.{setting} {path} does not exist")
    return str(path)


def describe_tls_failure(what: str, exc: ssl.SSLError) -> str:
    """What an operator should check after a failed handshake with ``what`` (``"mqtt"``, ``"influx"``)."""
    text = str(exc.reason or exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the server's certificate was not trusted ({exc.verify_message or text}); is {what}.ca_file the CA that"
            " signed it, and does the certificate name the host you connect to?"
        )
    if "CERTIFICATE_REQUIRED" in text or "HANDSHAKE_FAILURE" in text:
        return (
            f"the server refused the TLS handshake ({text}); does it require a client certificate ({what}.cert_file)?"
        )
    if "UNKNOWN_CA" in text or "BAD_CERTIFICATE" in text:
        return (
            f"the server refused our client certificate ({text});"
            f" was {what}.cert_file signed by a CA the server trusts?"
        )
    return f"TLS failed ({text})"
