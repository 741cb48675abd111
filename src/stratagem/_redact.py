"""Secret redaction shared by logs, ledger rows and exports.

A secret is anything that looks like an API key or a bearer token, the value of any field whose
name says it holds a secret, and any value registered with :func:`register_secret` (the
configured API keys are registered when a client is built). Redaction runs before anything is
rendered or written.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "may_hold_secret", "redact", "redact_value",
           "register_secret"]

REDACTED = "[REDACTED]"

_PATTERNS = [
    # OpenAI-style keys (sk-..., sk-proj-...), and other common vendor prefixes.
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\b(?:ghp|gho|github_pat|xox[abpr]|hf)_[A-Za-z0-9_\-]{8,}"),
    # Authorization headers and bearer tokens in free text.
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9_\-\.=:+/]{8,}"),
    re.compile(r"(?i)(api[_-]?key|access[_-]?token|secret|password)(\s*[=:]\s*)[^\s,;&\"']{4,}"),
]

# "token" alone or as a suffix (access_token, session-token) is a secret; token *counts*
# (prompt_tokens, tokens_total, max_tokens) are not.
_SECRET_KEY = re.compile(
    r"(?i)(api[_-]?key|authorization|secret|passw(or)?d|credential|(^|[_-])token$)"
)

# Environment variables whose values are secrets wherever they appear.
_SECRET_ENV = ("OPENAI_API_KEY", "STRATAGEM_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY")

_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact ``value`` wherever it appears from now on (shorter than 6 chars: ignored)."""
    if value and len(value) >= 6:
        with _lock:
            _registered.add(value)


_sorted: list[tuple[tuple[str, ...], list[str]]] = [((), [])]
"""The last (env values + registered, longest first) computed, keyed by what it was made of
(one slot, replaced under the lock)."""


def _known_secrets() -> list[str]:
    env = [v for name in _SECRET_ENV if (v := os.environ.get(name)) and len(v) >= 6]
    with _lock:
        key = (*env, *_registered)  # (a set's order is stable while it does not change)
        if key != _sorted[0][0]:
            # Longest first, so a secret that contains another is replaced whole.
            _sorted[0] = (key, sorted({*_registered, *env}, key=len, reverse=True))
        return _sorted[0][1]


def redact(text: str) -> str:
    """Return ``text`` with every secret in it replaced by ``[REDACTED]``."""
    for secret in _known_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    if not any(hint in lowered for hint in _STR_HINTS):  # no pattern can match
        return text
    for i, pattern in enumerate(_PATTERNS):
        if i == 3:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def is_secret_key(key: str) -> bool:
    """Whether a field named ``key`` holds a secret (``api_key``, ``Authorization``, ...)."""
    return bool(_SECRET_KEY.search(key))


def redact_value(value: Any, key: str | None = None) -> Any:
    """Redact a value of any JSON-like shape; fields named like secrets are replaced whole."""
    if key is not None and is_secret_key(key) and value not in (None, "", 0):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


_BYTE_PATTERNS = [re.compile(p.pattern.encode()) for p in _PATTERNS]


def may_hold_secret(data: bytes) -> bool:
    """Whether serialized ``data`` could hold text :func:`redact` would change: a registered
    secret or a key-like pattern anywhere in its bytes (UTF-8 text is found as it is). A
    cheap scan, with no false negatives for those; a false positive only costs a redaction."""
    if any(secret.encode() in data for secret in _known_secrets()):
        return True
    lowered = data.lower()
    if not any(hint in lowered for hint in _HINTS):  # no pattern can match: skip the regexes
        return False
    return any(p.search(data) for p in _BYTE_PATTERNS)


_STR_HINTS = ("sk-", "pk-", "rk-", "ghp_", "gho_", "github_pat", "xox", "hf_", "bearer", "api",
              "access", "secret", "password")
"""Each of ``_PATTERNS`` needs one of these (lower-cased) to match."""
_HINTS = tuple(h.encode() for h in _STR_HINTS)
