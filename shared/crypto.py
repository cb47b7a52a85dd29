"""Encryption of OAuth tokens at rest (AES-256-GCM) and digests of application tokens.

Tokens are encrypted with the first key of `B24PIPE_TOKEN_KEYS` and decrypted with
whichever key made them, so keys rotate without downtime: add the new key first, run `b24pipe portals rekey` (or
let refreshes re-seal the tokens), and drop the old key once `portals show` names no
record still using it.

Application tokens are never stored, only their SHA-256 digests: they are random values
of 32 hex characters, so a plain digest is as good as a slow one and checking stays cheap
on the hot path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import B24PipeError

_VERSION = "v1"


class DecryptError(B24PipeError):
    """A ciphertext no configured key can open (unknown key, or tampered data)."""


def key_id(key: bytes) -> str:
    """A short, non-secret name for a key, stored beside each ciphertext."""
    return hashlib.sha256(b"b24pipe-key-id:" + key).hexdigest()[:8]


class TokenCipher:
    """Encrypts with the first key, decrypts with any. The associated data binds a
    ciphertext to its place (e.g. the portal and field), so one cannot be swapped in
    for another."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = {key_id(key): AESGCM(key) for key in keys}
        self._current = key_id(keys[0])

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, plaintext.encode(), context.encode())
        blob = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{_VERSION}:{self._current}:{blob}"

    def decrypt(self, token: str, context: str) -> str:
        try:
            version, kid, blob = token.split(":", 2)
            raw = base64.urlsafe_b64decode(blob.encode())
        except ValueError:
            raise DecryptError("malformed ciphertext") from None
        aead = self._keys.get(kid)
        if version != _VERSION or aead is None:
            raise DecryptError(f"ciphertext made with unknown key {kid}")
        try:
            return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise DecryptError("ciphertext does not match its key or context") from None

    @property
    def current_key(self) -> str:
        """The id of the key new ciphertexts are made with."""
        return self._current

    def key_of(self, token: str) -> str:
        """The key id a ciphertext was made with (for rotation reports)."""
        return token.split(":", 2)[1] if token.count(":") >= 2 else ""


def digest(secret: str) -> str:
    """SHA-256 of an application token, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())


def generate_key() -> str:
    """A fresh base64 32-byte key for `B24PIPE_TOKEN_KEYS`."""
    return base64.b64encode(os.urandom(32)).decode()
