"""The ``Origin`` allow-list against cross-site WebSocket hijacking.

Browsers send the page's origin with every WebSocket handshake and let any
page open a socket to any host, with the user's cookies. ``--allowed-origins``
lists the origins whose pages may connect: exact origins
(``https://app.example.com``, ``http://localhost:5173``), or a scheme and a
wildcard subdomain (``https://*.example.com``, which does not match
``https://example.com`` itself). Comparison ignores case and a default port
(``https://a.com:443`` is ``https://a.com``).

Unset: every origin is accepted (local development). Set: only listed
origins and clients that send no ``Origin`` at all (servers, CLIs, mobile
apps; no browser omits it) are accepted; ``null`` (sandboxed frames, files)
only when listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "normalize_origin", "parse_allowed_origins"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port;
    ``"null"`` stays ``"null"``; ``None`` when it is not an origin."""
    text = value.strip().lower()
    if text == "null":
        return "null"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}:{port}"
    return f"{parts.scheme}://{host}"


def parse_allowed_origins(raw: str) -> str:
    """``--allowed-origins``: comma-separated origins, normalized."""
    result: list[str] = []
    for raw_item in raw.split(","):
        item = raw_item.strip()
        if not item:
            continue
        if item == "*":
            raise ValueError("must list origins; leave it unset to accept every origin")
        wildcard = "://*." in item
        origin = normalize_origin(item.replace("://*.", "://wildcard.") if wildcard else item)
        if origin is None:
            raise ValueError(f"must be origins like https://app.example.com (got {item!r})")
        result.append(origin.replace("://wildcard.", "://*.") if wildcard else origin)
    return ",".join(dict.fromkeys(result))


class OriginPolicy:
    """Which handshake origins are accepted."""

    __slots__ = ("exact", "suffixes")

    def __init__(self, allowed: str) -> None:
        entries = [e for e in allowed.split(",") if e]
        self.exact = frozenset(e for e in entries if "://*." not in e)
        # "https://*.example.com" -> ("https://", ".example.com", optional ":port")
        self.suffixes = tuple(
            (e.split("*", 1)[0], e.split("*", 1)[1]) for e in entries if "://*." in e
        )

    @property
    def enabled(self) -> bool:
        return bool(self.exact or self.suffixes)

    def allows(self, origin: str | None) -> bool:
        if not self.enabled or origin is None:
            return True
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        if normalized in self.exact:
            return True
        for scheme, suffix in self.suffixes:
            if normalized.startswith(scheme) and normalized.endswith(suffix):
                host = normalized[len(scheme):-len(suffix)]
                if host and "/" not in host and ":" not in host:
                    return True
        return False

    def allows_scope(self, scope: Mapping[str, Any]) -> bool:
        for key, value in scope.get("headers") or ():
            if key.lower() == b"origin":
                return self.allows(value.decode("latin-1"))
        return True
