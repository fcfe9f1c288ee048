"""JWT authentication of WebSocket handshakes (PyJWT).

A node verifies tokens when ``--jwt-secret`` (HS256/384/512) or
``--jwt-public-key`` (RS*/PS*/ES*/EdDSA, a PEM public key or certificate,
as a file path or inline) is set. The token travels as ``?token=...`` on the
URL (browsers cannot set headers on a WebSocket) or as
``Authorization: Bearer ...``; the header wins when both are present.

* The algorithm must be one the node accepts (``--jwt-algorithms``, default:
  what the configured keys imply). ``alg: none`` is never accepted, and a
  public key is never used as an HMAC secret.
* ``exp`` is required (``--jwt-require-exp``, default on) and checked, as are
  ``nbf`` and ``iat`` when present, with ``--jwt-leeway`` seconds of clock
  skew; ``aud`` and ``iss`` are checked when ``--jwt-audience`` /
  ``--jwt-issuer`` are set.
* The subject (``sub``) and all claims land in the connection's metadata
  (``custom["sub"]``, ``custom["claims"]``), which the backplane replicates.

No key configured: the node runs open, every connection is anonymous and a
token is ignored.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .errors import RtforgeError
from .policy import PolicyError, parse_grants

__all__ = [
    "ANONYMOUS",
    "HMAC_ALGORITHMS",
    "KEY_ALGORITHMS",
    "AuthError",
    "Authenticator",
    "Identity",
    "RedactTokenFilter",
    "load_public_key",
    "parse_algorithms",
    "token_from_scope",
]

log = logging.getLogger("rtforge.auth")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)
#: longest token accepted (a token is parsed before it is verified)
MAX_TOKEN_LENGTH = 8192
MIN_SECRET_BYTES = 32

#: metric label values of refusals (a bounded set)
REASONS = (
    "missing", "malformed", "algorithm", "signature", "expired", "not_yet_valid",
    "audience", "issuer", "claims",
)


class AuthError(RtforgeError):
    """A handshake without a valid token; ``reason`` is a metric label."""

    code = "unauthorized"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on the other end of a connection."""

    subject: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    anonymous: bool = True
    grants: tuple[tuple[str, frozenset[str]], ...] = ()
    expires_at: float | None = None

    def custom(self) -> dict[str, Any]:
        """What goes into ``ConnectionMetadata.custom``."""
        if self.anonymous:
            return {}
        return {"sub": self.subject, "claims": dict(self.claims)}

    @classmethod
    def from_custom(cls, custom: Mapping[str, Any]) -> Identity:
        """The identity stored in a connection's metadata (see :meth:`custom`)."""
        claims = custom.get("claims")
        if not isinstance(claims, dict):
            return ANONYMOUS
        exp = claims.get("exp")
        try:
            grants = parse_grants(claims.get("channels"))
        except PolicyError:
            grants = ()
        subject = custom.get("sub")
        return cls(
            subject if isinstance(subject, str) else None, claims, False, grants,
            float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
        )


ANONYMOUS = Identity()


# -- settings parsers ------------------------------------------------------------


def parse_algorithms(raw: str) -> str:
    """``--jwt-algorithms``: a comma-separated list (empty: automatic)."""
    names = [part.strip() for part in raw.split(",") if part.strip()]
    known = {a.lower(): a for a in (*HMAC_ALGORITHMS, *KEY_ALGORITHMS)}
    result = []
    for name in names:
        if name.lower() == "none":
            raise ValueError("must not contain 'none': unsigned tokens are never accepted")
        if name.lower() not in known:
            raise ValueError(f"must be a comma-separated list of {', '.join(known.values())}")
        result.append(known[name.lower()])
    return ",".join(dict.fromkeys(result))


def load_public_key(raw: str) -> Any:
    """The public key of ``--jwt-public-key``: a PEM public key or
    certificate, inline or as the path of a file."""
    text = raw.strip()
    if text.startswith("-----BEGIN"):
        data = text.encode()
    else:
        try:
            data = Path(text).expanduser().read_bytes()
        except OSError as exc:
            raise ValueError(f"must be a readable PEM file ({exc.strerror or exc})") from None
    try:
        if b"-----BEGIN CERTIFICATE" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError("must be a PEM public key or certificate") from None


def _key_algorithms(key: Any) -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}.get(
            key.curve.name, ()
        )
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    return ()


def key_algorithms(raw: str) -> tuple[str, ...]:
    """Algorithms the ``--jwt-public-key`` value implies."""
    return _key_algorithms(load_public_key(raw))


# -- the authenticator -------------------------------------------------------------


class Authenticator:
    """Verifies tokens against the node's settings."""

    def __init__(
        self,
        *,
        secret: str = "",
        public_key: str = "",
        algorithms: str = "",
        audience: str = "",
        issuer: str = "",
        leeway: float = 5.0,
        require_exp: bool = True,
    ) -> None:
        self._secret = secret.encode() if secret else None
        self._public_key = load_public_key(public_key) if public_key else None
        if algorithms:
            allowed = tuple(algorithms.split(","))
        else:
            allowed = (HMAC_ALGORITHMS[:1] if self._secret else ()) + (
                _key_algorithms(self._public_key) if self._public_key is not None else ()
            )
        # Never an algorithm without its key: no "none", no public key as HMAC secret.
        self.algorithms = tuple(
            a for a in allowed
            if (a in HMAC_ALGORITHMS and self._secret) or
               (a in KEY_ALGORITHMS and self._public_key is not None)
        )
        self.audience = audience or None
        self.issuer = issuer or None
        self.leeway = leeway
        self.require = ["exp"] if require_exp else []

    @classmethod
    def from_settings(cls, settings: Any) -> Authenticator:
        return cls(
            secret=settings.jwt_secret,
            public_key=settings.jwt_public_key,
            algorithms=settings.jwt_algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
            require_exp=settings.jwt_require_exp,
        )

    @property
    def enabled(self) -> bool:
        return self._secret is not None or self._public_key is not None

    def authenticate(self, token: str | None) -> Identity:
        """The identity of ``token``; :class:`AuthError` when it is not valid.
        ``None`` (no token) is anonymous here: the caller decides whether
        anonymous connections are allowed."""
        if not self.enabled or token is None:
            return ANONYMOUS
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("the token is empty or too long", "malformed")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("the token is not a JWT", "malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError(f"the token's algorithm {str(alg)[:16]!r} is not accepted",
                            "algorithm")
        key: Any = self._secret if alg in HMAC_ALGORITHMS else self._public_key
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway,
                options={"require": self.require, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired", "expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet", "not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token is not meant for this audience", "audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token's issuer is not accepted", "issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify", "signature") from None
        except (jwt.MissingRequiredClaimError, jwt.InvalidIssuedAtError,
                jwt.exceptions.InvalidSubjectError) as exc:
            raise AuthError(f"the token's claims are not valid: {exc}", "claims") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("the token's algorithm is not accepted", "algorithm") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            log.debug("token refused: %r", exc)
            raise AuthError("the token is not valid", "malformed") from None
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise AuthError("the token's sub must be a string", "claims")
        try:
            grants = parse_grants(claims.get("channels"))
        except PolicyError as exc:
            raise AuthError(str(exc), "claims") from None
        exp = claims.get("exp")
        expires_at = float(exp) if isinstance(exp, int | float) else None
        return Identity(subject, claims, False, grants, expires_at)

    def expired(self, identity: Identity, now: float | None = None) -> bool:
        """True once the identity's token has expired (with the leeway)."""
        if identity.expires_at is None:
            return False
        return (now if now is not None else time.time()) > identity.expires_at + self.leeway


# -- where tokens come from ---------------------------------------------------------


def token_from_scope(scope: Mapping[str, Any]) -> str | None:
    """The bearer token of a handshake: ``Authorization: Bearer`` first,
    then the ``token`` query parameter. ``None`` when there is none."""
    for key, value in scope.get("headers") or ():
        if key.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return str(credentials).strip()
    query = scope.get("query_string") or b""
    if b"token=" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name == "token":
                return str(value)
    return None


_TOKEN_IN_TEXT = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s\"']*")


class RedactTokenFilter(logging.Filter):
    """Replace ``token=...`` in logged URLs (uvicorn logs each WebSocket's
    path with its query string) by ``token=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_TEXT.sub(r"\1***", arg) if isinstance(arg, str) and "token=" in arg
                else arg
                for arg in record.args
            )
        elif isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_IN_TEXT.sub(r"\1***", record.msg)
        return True
