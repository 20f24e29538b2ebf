"""Strict readers for settings that come from environment variables.

Each helper raises ImproperlyConfigured naming the variable when its value
cannot be parsed, so a typo fails at start-up instead of running with a
silently different configuration.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the variable, or the content of the file named by NAME_FILE.

    NAME_FILE lets secrets come from a mounted file (a Kubernetes Secret
    volume) instead of the process environment.
    """
    file_name = os.environ.get(f"{name}_FILE")
    value = os.environ.get(name)
    if file_name and value is not None:
        raise ImproperlyConfigured(f"Set either {name} or {name}_FILE, not both.")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ImproperlyConfigured(
                f"{name}_FILE names {file_name!r}, which cannot be read: {error.strerror}."
            ) from error
    if value is None or value == "":
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean; use one of true, false, 1, 0, yes, no, on, off."
    )


def env_int(name: str, default: int | None, minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}.")
    return number


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """Return a comma-separated variable as a list, dropping surrounding blanks."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default or [])
    items = [item.strip() for item in value.split(",")]
    if any(item == "" for item in items):
        raise ImproperlyConfigured(f"{name}={value!r} has an empty item; remove the extra comma.")
    return items


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")
    return value
