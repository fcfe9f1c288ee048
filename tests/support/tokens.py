"""JWTs and key pairs for security tests (real PyJWT, real keys)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["KeyPair", "ec_key_pair", "hs256", "rsa_key_pair", "unsigned_token"]

SECRET = "test-secret-" + "x" * 40


def hs256(secret: str = SECRET, *, ttl: float = 300.0, **claims: Any) -> str:
    """An HS256 token with ``exp`` ``ttl`` seconds from now (unless given)."""
    claims.setdefault("exp", int(time.time() + ttl))
    return jwt.encode(claims, secret, algorithm="HS256")


def unsigned_token(**claims: Any) -> str:
    """A token with ``alg: none`` and an empty signature."""
    claims.setdefault("exp", int(time.time() + 300))

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@dataclass
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    algorithm: str

    def write_public(self, directory: Path) -> Path:
        path = directory / f"{self.algorithm.lower()}-public.pem"
        path.write_bytes(self.public_pem)
        return path

    def sign(self, *, ttl: float = 300.0, **claims: Any) -> str:
        claims.setdefault("exp", int(time.time() + ttl))
        return jwt.encode(claims, self.private_pem, algorithm=self.algorithm)


def _pair(key: Any, algorithm: str) -> KeyPair:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, public, algorithm)


def rsa_key_pair() -> KeyPair:
    return _pair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


def ec_key_pair() -> KeyPair:
    return _pair(ec.generate_private_key(ec.SECP256R1()), "ES256")
