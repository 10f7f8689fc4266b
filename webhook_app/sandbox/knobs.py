"""Runtime knobs of the sandbox: delays, faults and callback shapes; also read from the env."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import ERROR_STYLES

CALLBACK_FORMATS = ("json-envelope", "json-bare", "form-envelope", "form-bare")

_FLOAT_KNOBS = frozenset(
    {
        "preview_delay",
        "final_delay",
        "session_ttl",
        "drop_rate",
        "failure_rate",
        "hang_rate",
        "hang_seconds",
        "preview_ttl",
        "rate_limit",
    }
)
_RATE_KNOBS = frozenset({"drop_rate", "failure_rate", "hang_rate"})
_INT_KNOBS = frozenset({"duplicates", "callback_retries"})
_BOOL_KNOBS = frozenset({"reverse", "refuse_login"})
_STR_KNOBS = frozenset({"callback_format", "error_names"})
_OPTIONAL_STR_KNOBS = frozenset({"api_key"})
_OPTIONAL_INT_KNOBS = frozenset({"seed"})

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass
class SandboxKnobs:
    """Behaviour of the fake upstream; every field may be changed while the sandbox runs."""

    preview_delay: float = 1.0
    final_delay: float = 2.0
    session_ttl: float = 10800.0
    drop_rate: float = 0.0
    duplicates: int = 1
    reverse: bool = False
    callback_format: str = "json-envelope"
    failure_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 40.0
    callback_retries: int = 3
    api_key: str | None = None
    seed: int | None = None
    # Seconds a preview URL answers after the preview stage; 0 keeps previews forever.
    preview_ttl: float = 0.0
    # Calls answered per second (a sliding second); those above are rate limited. 0: no limit.
    rate_limit: float = 0.0
    # How failures are named: "sdk" (the API's own exception names) or "plain".
    error_names: str = "sdk"
    # Refuse every login as an unknown account (the API key stays accepted).
    refuse_login: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The knobs as a JSON-ready mapping."""
        return dataclasses.asdict(self)


KNOB_NAMES = tuple(field.name for field in dataclasses.fields(SandboxKnobs))


class KnobError(ValueError):
    """A knob value out of range; `knob` names the field."""

    def __init__(self, knob: str, message: str) -> None:
        super().__init__(f"{knob} {message}")
        self.knob = knob


def validate_knobs(knobs: SandboxKnobs) -> None:
    """Raise KnobError naming the first knob whose value is out of range."""
    for name in sorted(_FLOAT_KNOBS):
        value = getattr(knobs, name)
        if value < 0:
            raise KnobError(name, "must not be negative")
        if name in _RATE_KNOBS and value > 1:
            raise KnobError(name, "must be between 0 and 1")
    if knobs.duplicates < 1:
        raise KnobError("duplicates", "must be at least 1")
    if knobs.callback_retries < 0:
        raise KnobError("callback_retries", "must not be negative")
    if knobs.error_names not in ERROR_STYLES:
        raise KnobError("error_names", f"must be one of {', '.join(ERROR_STYLES)}")
    if knobs.callback_format not in CALLBACK_FORMATS:
        raise KnobError("callback_format", f"must be one of {', '.join(CALLBACK_FORMATS)}")


def _coerce_json_value(name: str, value: object) -> object:
    """Check one knob value as it arrives in a JSON object (bools are not numbers here)."""
    if value is None and name in _OPTIONAL_STR_KNOBS | _OPTIONAL_INT_KNOBS:
        return None
    if isinstance(value, bool):
        if name in _BOOL_KNOBS:
            return value
    elif isinstance(value, int | float):
        if name in _FLOAT_KNOBS:
            return float(value)
        if name in _INT_KNOBS | _OPTIONAL_INT_KNOBS and float(value).is_integer():
            return int(value)
    elif isinstance(value, str) and name in _STR_KNOBS | _OPTIONAL_STR_KNOBS:
        return value
    raise KnobError(name, f"has an invalid value: {value!r}")


def updated_knobs(knobs: SandboxKnobs, changes: Mapping[str, object]) -> SandboxKnobs:
    """Return a validated copy of `knobs` with `changes` (JSON values) applied."""
    unknown = sorted(set(changes) - set(KNOB_NAMES))
    if unknown:
        raise ValueError(f"unknown knob: {', '.join(unknown)}")
    coerced = {name: _coerce_json_value(name, value) for name, value in changes.items()}
    candidate = dataclasses.replace(knobs, **coerced)  # type: ignore[arg-type]
    validate_knobs(candidate)
    return candidate


def copy_knobs_into(target: SandboxKnobs, source: SandboxKnobs) -> None:
    """Overwrite `target` in place, so holders of the original object see the change."""
    for name in KNOB_NAMES:
        setattr(target, name, getattr(source, name))


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    raise ValueError(text)


def _env_parser(name: str) -> Callable[[str], object]:
    if name in _FLOAT_KNOBS:
        return float
    if name in _INT_KNOBS | _OPTIONAL_INT_KNOBS:
        return int
    if name in _BOOL_KNOBS:
        return _parse_bool
    return str


def knobs_from_env(environ: Mapping[str, str]) -> SandboxKnobs:
    """Build knobs from SANDBOX_* variables; an unset or empty variable keeps the default."""
    values: dict[str, object] = {}
    for name in KNOB_NAMES:
        variable = f"SANDBOX_{name.upper()}"
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            values[name] = _env_parser(name)(text)
        except ValueError:
            raise ValueError(f"{variable}: invalid value {text!r}") from None
    knobs = SandboxKnobs(**values)  # type: ignore[arg-type]
    try:
        validate_knobs(knobs)
    except KnobError as error:
        raise ValueError(f"SANDBOX_{error.knob.upper()}: {error}") from None
    return knobs
