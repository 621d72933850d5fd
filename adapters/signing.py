"""The deployment's Ed25519 signing key (cryptography), kept in one PEM file readable by its owner only."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger("pilot.signing")


class SigningKeyError(ValueError):
    pass


def fingerprint(public_pem: bytes) -> str:
    """``ed25519:`` and the SHA-256 of the raw public key: what an evaluator compares with the published one."""
    key = load_public_key(public_pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()


def load_public_key(public_pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public_pem)
    except ValueError as exc:
        raise SigningKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"the public key is {type(key).__name__}, not Ed25519")
    return key


def verify(public_pem: bytes, signature: bytes, data: bytes) -> bool:
    try:
        load_public_key(public_pem).verify(signature, data)
    except InvalidSignature:
        return False
    return True


class SigningKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key in ``path``; a new one, written there with mode 0600, if the file does not exist."""
        if path.is_file():
            return cls.load(path)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        key = cls(private)
        log.warning("made a new signing key in %s (%s): keep it, and publish the fingerprint", path, key.fingerprint)
        return key

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise SigningKeyError(f"the signing key {path} cannot be read: {exc}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SigningKeyError(f"the signing key {path} is {type(private).__name__}, not Ed25519")
        return cls(private)

    @property
    def public_pem(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_pem)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)
