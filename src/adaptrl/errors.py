"""User-facing errors.

Every mistake a user can make (a bad name, an impossible size, a malformed parameter pytree)
raises :class:`ConfigError` with one readable sentence saying what was wrong and what is valid.
The CLI prints the message without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AdaptrlError(Exception):
    """Base class of the errors adaptrl raises on purpose."""


class ConfigError(AdaptrlError, ValueError):
    """Bad user input: unknown names, impossible sizes, malformed arrays."""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ConfigError:
    """A :class:`ConfigError` for an unknown ``name``, listing close matches and all valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    lowered = {v.lower(): v for v in valid}
    if name.lower() in lowered and lowered[name.lower()] not in close:
        close.insert(0, lowered[name.lower()])
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}.")


def require_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
