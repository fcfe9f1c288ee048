"""Parsers of the security settings (see :data:`service.settings.OPTIONS`).

Each takes the raw flag or variable text and returns the value to keep, or
raises :class:`ValueError` with a message that says what the value "must"
be; the settings loader turns it into one clear line."""

from __future__ import annotations

import math
from typing import Any

from .auth import HMAC_ALGORITHMS, MIN_SECRET_BYTES, key_algorithms, parse_algorithms
from .origin import parse_allowed_origins
from .policy import ChannelPolicy, PolicyError, load_policy_source

__all__ = [
    "channel_name_length",
    "channel_policy",
    "jwt_algorithms",
    "jwt_problem",
    "jwt_public_key",
    "jwt_secret",
    "non_empty_text",
    "non_negative_float",
    "non_negative_int",
    "origins",
]


def jwt_secret(raw: str) -> str:
    if raw and len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (RFC 7518, section 3.2)")
    return raw


def jwt_public_key(raw: str) -> str:
    value = raw.strip()
    if value and not key_algorithms(value):
        raise ValueError("must be an RSA, EC (P-256/384/521) or Ed25519/Ed448 public key")
    return value


def jwt_algorithms(raw: str) -> str:
    return parse_algorithms(raw)


def non_empty_text(raw: str) -> str:
    return raw.strip()


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be a number of at least 0")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be an integer of at least 0 (0: no limit)")
    return value


def channel_name_length(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 255:
        raise ValueError("must be between 1 and 255")
    return value


def channel_policy(raw: str) -> str:
    value = raw.strip()
    if value:
        try:
            ChannelPolicy.from_document(load_policy_source(value))
        except PolicyError as exc:
            raise ValueError(f"must be a valid channel policy: {exc}") from None
    return value


def origins(raw: str) -> str:
    return parse_allowed_origins(raw)


def jwt_problem(settings: Any) -> str | None:
    """What is wrong with the combination of JWT settings, if anything."""
    algorithms = [a for a in settings.jwt_algorithms.split(",") if a]
    has_key = bool(settings.jwt_secret or settings.jwt_public_key)
    if not has_key:
        if algorithms or settings.jwt_audience or settings.jwt_issuer:
            return ("--jwt-algorithms, --jwt-audience and --jwt-issuer need --jwt-secret or "
                    "--jwt-public-key")
        if settings.allow_anonymous:
            return "--allow-anonymous needs --jwt-secret or --jwt-public-key"
        return None
    key_algs = key_algorithms(settings.jwt_public_key) if settings.jwt_public_key else ()
    for alg in algorithms:
        if alg in HMAC_ALGORITHMS and not settings.jwt_secret:
            return f"--jwt-algorithms lists {alg}, which needs --jwt-secret"
        if alg not in HMAC_ALGORITHMS and not settings.jwt_public_key:
            return f"--jwt-algorithms lists {alg}, which needs --jwt-public-key"
        if alg not in HMAC_ALGORITHMS and not _fits(alg, key_algs):
            return f"--jwt-algorithms lists {alg}, which the --jwt-public-key cannot verify"
    return None


def _fits(alg: str, key_algs: tuple[str, ...]) -> bool:
    if not key_algs:
        return False
    family = key_algs[0]
    if family == "RS256":  # an RSA key verifies RS* and PS*
        return alg[:2] in ("RS", "PS")
    return alg == family
