"""The one parser of settings written as text (environment variables, config overrides).

Settings are read from the environment in one place per process: the app's config
(``app.config``), gunicorn's config file (``gunicorn.conf.py``, which also hands the
buffering worker its settings) and the CLIs' argparse. All of them parse with the functions
here, so ``INFERENCE_SPIN=on`` means the same everywhere and a bad value fails with the
setting's name in the message. The core itself never reads the environment: it gets values
(e.g. :class:`cxr.inference.ThreadSettings`). Standard library only: gunicorn's master
imports this.
"""

from __future__ import annotations

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def parse_bool(name: str, value) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case; empty is false); a bool passes through."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean (use one of {', '.join(TRUE_WORDS[:2] + FALSE_WORDS[:2])})")


def parse_int(name: str, value, *, minimum: int | None = None) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name}={value!r} must be at least {minimum}")
    return number


def parse_float(name: str, value, *, positive: bool = False) -> float:
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None
    if positive and number <= 0:
        raise ValueError(f"{name}={value!r} must be positive")
    return number


def parse_choice(name: str, value, choices: tuple[str, ...]) -> str:
    word = str(value).strip().lower()
    if word not in choices:
        raise ValueError(f"{name}={value!r}: choose one of {', '.join(choices)}")
    return word


def setting(environ, name: str, default, parse=None, **options):
    """``environ[name]`` parsed by ``parse`` (``parse_int``, ...), or ``default`` when unset or empty."""
    raw = environ.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    return parse(name, raw, **options) if parse else raw
