"""Channel authorization: a small declarative policy of channel patterns.

A policy is a JSON (or TOML) document::

    {
      "default": "authenticated",
      "rules": [
        {"pattern": "notifications:user-{sub}", "subscribe": "user",
         "presence": "user", "publish": "deny"},
        {"pattern": "public:*", "access": "public", "publish": "authenticated"},
        {"pattern": "chat:*", "access": "authenticated"},
        {"pattern": "admin:*", "access": "granted"}
      ]
    }

Each rule names a channel ``pattern`` and, for each client action
(``subscribe``, ``publish``, ``presence``), what it requires; ``access`` sets
all three at once and an action key overrides it. The first rule whose
pattern matches decides; ``default`` covers channels no rule matches.

Requirements:

``public``         anyone, with or without a token
``authenticated``  any valid token
``user``           a valid token whose claims equal every ``{name}`` placeholder
                   of the pattern (``{sub}``: the token's subject)
``granted``        a valid token whose ``channels`` claim lists the channel
``deny``           no client (the HTTP API still can)

In a pattern ``*`` matches any run of characters (``:`` included) and
``{name}`` matches one or more characters bound to the claim ``name``.

Private channels (``Channel.make_private()`` / ``PUT /api/channels/C``
with ``is_private``) additionally need an explicit grant in the token's
``channels`` claim, whatever the rule says.

The ``channels`` claim is either a list of channel names or patterns (``*``
as above), each granting every action, or an object mapping a name or
pattern to the actions it grants (a list, or ``"*"`` for all)::

    {"sub": "123", "channels": ["admin:ops", "team-7:*"]}
    {"sub": "123", "channels": {"admin:ops": ["subscribe", "presence"], "team-7:*": "*"}}
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIONS",
    "DEFAULT_AUTH_POLICY",
    "OPEN_POLICY",
    "REQUIREMENTS",
    "ChannelPolicy",
    "PolicyError",
    "granted_actions",
    "load_policy_source",
    "parse_grants",
]

ACTIONS = ("subscribe", "publish", "presence")
REQUIREMENTS = ("public", "authenticated", "user", "granted", "deny")

#: the policy of a node with JWT authentication and no ``--channel-policy``
DEFAULT_AUTH_POLICY: dict[str, Any] = {
    "default": "authenticated",
    "rules": [
        {"pattern": "notifications:user-{sub}", "subscribe": "user", "presence": "user",
         "publish": "deny"},
    ],
}
#: the policy of a node without authentication and no ``--channel-policy``
OPEN_POLICY: dict[str, Any] = {"default": "public", "rules": []}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
_RULE_KEYS = frozenset({"pattern", "access", *ACTIONS})
_MAX_RULES = 1000


class PolicyError(ValueError):
    """A policy document that cannot be used; the text says why."""


def load_policy_source(raw: str) -> dict[str, Any]:
    """The policy document of a ``--channel-policy`` value: inline JSON
    (starts with ``{``), or the path of a ``.json`` or ``.toml`` file."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PolicyError(f"is not valid JSON: {exc}") from None
    else:
        path = Path(text).expanduser()
        try:
            content = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot be read: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(content) if path.suffix == ".toml" else json.loads(content)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError("must be an object with 'default' and 'rules'")
    return data


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters; everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _rights(source: Mapping[str, Any], where: str, fallback: Mapping[str, str]) -> dict[str, str]:
    access = source.get("access")
    rights = dict(fallback)
    if access is not None:
        rights = dict.fromkeys(ACTIONS, _requirement(access, f"{where}.access"))
    for action in ACTIONS:
        if action in source:
            rights[action] = _requirement(source[action], f"{where}.{action}")
    return rights


def _requirement(value: Any, where: str) -> str:
    if value not in REQUIREMENTS:
        raise PolicyError(f"{where} must be one of {', '.join(REQUIREMENTS)} (got {value!r})")
    return str(value)


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str
    regex: re.Pattern[str]
    placeholders: tuple[str, ...]
    rights: Mapping[str, str]

    @classmethod
    def parse(cls, data: Any, index: int, default: Mapping[str, str]) -> Rule:
        where = f"rules[{index}]"
        if not isinstance(data, dict):
            raise PolicyError(f"{where} must be an object")
        unknown = set(data) - _RULE_KEYS
        if unknown:
            raise PolicyError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        pattern = data.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise PolicyError(f"{where}.pattern must be a non-empty string")
        regex_parts: list[str] = []
        names: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(pattern):
            regex_parts.append(_literal(pattern[position:match.start()]))
            regex_parts.append("(.+?)")
            names.append(match.group(1))
            position = match.end()
        regex_parts.append(_literal(pattern[position:]))
        if "{" in "".join(_PLACEHOLDER.split(pattern)[::2]):
            raise PolicyError(f"{where}.pattern has a malformed placeholder: {pattern!r}")
        rights = _rights(data, where, default)
        if "user" in rights.values() and not names:
            raise PolicyError(f"{where}: 'user' needs a placeholder such as {{sub}} in the pattern")
        regex = re.compile("".join(regex_parts), re.DOTALL)
        return cls(pattern, regex, tuple(names), rights)


def _literal(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy requires of one action on one channel."""

    requirement: str
    bound: Mapping[str, str]
    rule: str | None


class ChannelPolicy:
    """A parsed policy; :meth:`decide` evaluates it."""

    __slots__ = ("default", "rules", "source")

    def __init__(self, rules: tuple[Rule, ...], default: Mapping[str, str],
                 source: Mapping[str, Any]) -> None:
        self.rules = rules
        self.default = default
        self.source = source

    @classmethod
    def from_document(cls, data: Mapping[str, Any]) -> ChannelPolicy:
        unknown = set(data) - {"default", "rules"}
        if unknown:
            raise PolicyError(f"unknown keys: {', '.join(sorted(unknown))}")
        raw_default = data.get("default", "deny")
        if isinstance(raw_default, str):
            default = dict.fromkeys(ACTIONS, _requirement(raw_default, "default"))
        elif isinstance(raw_default, dict):
            extra = set(raw_default) - {"access", *ACTIONS}
            if extra:
                raise PolicyError(f"default has unknown keys: {', '.join(sorted(extra))}")
            default = _rights(raw_default, "default", dict.fromkeys(ACTIONS, "deny"))
        else:
            raise PolicyError("default must be a requirement or an object of them")
        if "user" in default.values():
            raise PolicyError("default cannot be 'user': only a pattern with {sub} binds a user")
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise PolicyError("rules must be a list")
        if len(raw_rules) > _MAX_RULES:
            raise PolicyError(f"at most {_MAX_RULES} rules")
        # An action a rule leaves out falls back to the default's requirement.
        rules = tuple(Rule.parse(rule, i, default) for i, rule in enumerate(raw_rules))
        return cls(rules, default, data)

    @classmethod
    def from_setting(cls, raw: str, *, authenticated: bool) -> ChannelPolicy:
        """The policy of ``--channel-policy`` (or the built-in default)."""
        if raw.strip():
            return cls.from_document(load_policy_source(raw))
        return cls.from_document(DEFAULT_AUTH_POLICY if authenticated else OPEN_POLICY)

    def decide(self, channel: str, action: str) -> Decision:
        for rule in self.rules:
            match = rule.regex.fullmatch(channel)
            if match is not None:
                bound = dict(zip(rule.placeholders, match.groups(), strict=True))
                return Decision(rule.rights[action], bound, rule.pattern)
        return Decision(self.default[action], {}, None)

    def describe(self) -> dict[str, Any]:
        return {
            "default": dict(self.default),
            "rules": [{"pattern": r.pattern, **r.rights} for r in self.rules],
        }


def parse_grants(claim: Any) -> tuple[tuple[str, frozenset[str]], ...]:
    """The ``channels`` claim as ``((pattern, actions), ...)``; raises
    :class:`PolicyError` when it has neither accepted shape."""
    if claim is None:
        return ()
    everything = frozenset(ACTIONS)
    if isinstance(claim, list):
        if not all(isinstance(item, str) and item for item in claim):
            raise PolicyError("the channels claim must list non-empty strings")
        return tuple((item, everything) for item in claim)
    if isinstance(claim, dict):
        grants: list[tuple[str, frozenset[str]]] = []
        for pattern, actions in claim.items():
            if not pattern:
                raise PolicyError("the channels claim has an empty channel pattern")
            if actions == "*":
                grants.append((pattern, everything))
            elif isinstance(actions, list) and all(a in ACTIONS for a in actions):
                grants.append((pattern, frozenset(actions)))
            else:
                raise PolicyError(
                    f"the channels claim grants {pattern!r} neither '*' nor a list of "
                    f"{', '.join(ACTIONS)}"
                )
        return tuple(grants)
    raise PolicyError("the channels claim must be a list or an object")


def granted_actions(grants: tuple[tuple[str, frozenset[str]], ...], channel: str) -> frozenset[str]:
    """The actions the grants allow on ``channel``."""
    allowed: frozenset[str] = frozenset()
    for pattern, actions in grants:
        if pattern == channel or ("*" in pattern and _glob(pattern).fullmatch(channel)):
            allowed = allowed | actions
    return allowed
