"""Typed, validated experiment configs with named profiles.

Every chapter has one frozen dataclass config.  Each field is declared with
:func:`param`, which records a one-line help text and the allowed range or
choices.  A config class lists its profiles (``smoke``, ``book``, ``paper``)
as field overrides; :meth:`ProfileConfig.for_profile` builds the config for a
profile plus explicit overrides and validates everything *before* any work
starts, so a typo in a parameter fails in milliseconds, not after an hour of
training.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

PROFILE_NAMES = ("smoke", "book", "paper")


class ConfigError(ValueError):
    """A bad profile, parameter name, type or value."""


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None) -> Any:
    """Declare a config field with its help text and allowed values.

    ``min``/``max`` bound numbers (and every element of a tuple of numbers);
    ``choices`` lists the allowed values of a string (or of every element of a
    tuple of strings).
    """
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; parse it if it is a string."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return _coerce(name, args[0], value)
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter '{name}' must be a sequence (e.g. 1,2,3), got {value!r}")
        return tuple(_coerce(name, elem, v.strip() if isinstance(v, str) else v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"parameter '{name}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"parameter '{name}' must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"parameter '{name}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"parameter '{name}' must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"parameter '{name}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"parameter '{name}' must be a string, got {value!r}")
    return value


def _check_range(name: str, meta: dict, value: Any) -> None:
    items = value if isinstance(value, tuple) else (value,)
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    for v in items:
        if v is None:
            continue
        if choices is not None and v not in choices:
            raise ConfigError(f"parameter '{name}' must be one of {', '.join(map(str, choices))}; got {v!r}")
        if lo is not None and v < lo:
            raise ConfigError(f"parameter '{name}' must be >= {lo}; got {v!r}")
        if hi is not None and v > hi:
            raise ConfigError(f"parameter '{name}' must be <= {hi}; got {v!r}")


@dataclass(frozen=True)
class ProfileConfig:
    """Base class: a frozen config whose fields are overridden per profile.

    Subclasses set ``PROFILES = {"smoke": {...}, "book": {...}, "paper": {...}}``
    and may override :meth:`check` for cross-field rules.
    """

    profile: str = param("book", "which profile these values came from", choices=PROFILE_NAMES)
    seed: int = param(0, "base random seed; run r of an ensemble uses seed + r", min=0)
    device: str = param("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def parameters(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in fields(cls) if f.name != "profile"}

    @classmethod
    def for_profile(cls, profile: str = "book", **overrides: Any):
        """The config for ``profile`` with ``overrides`` applied and validated."""
        if profile not in PROFILE_NAMES:
            raise ConfigError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILE_NAMES)}")
        known = cls.parameters()
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"for {cls.__name__}; allowed: {', '.join(known)}")
        values = {**cls.PROFILES.get(profile, {}), **overrides}
        hints = typing.get_type_hints(cls)
        typed = {k: _coerce(k, hints[k], v) for k, v in values.items()}
        return cls(profile=profile, **typed)

    @classmethod
    def parse_assignments(cls, pairs: list[str]) -> dict[str, Any]:
        """Parse ``["key=value", ...]`` from a command line into typed overrides."""
        hints = typing.get_type_hints(cls)
        known = cls.parameters()
        out: dict[str, Any] = {}
        for pair in pairs:
            if "=" not in pair:
                raise ConfigError(f"expected key=value, got {pair!r}")
            key, raw = pair.split("=", 1)
            key = key.strip()
            if key not in known:
                raise ConfigError(f"unknown parameter {key!r} for {cls.__name__}; allowed: {', '.join(known)}")
            out[key] = _coerce(key, hints[key], raw.strip())
        return out

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _coerce(f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            _check_range(f.name, f.metadata, value)
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"parameter 'device' must be auto, cpu, cuda, cuda:N or mps; got {dev!r}")
        self.check()

    def check(self) -> None:
        """Cross-field validation; subclasses raise ConfigError."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def describe(cls) -> str:
        """One line per parameter: name, type, per-profile values and help."""
        hints = typing.get_type_hints(cls)
        lines = []
        for name, f in cls.parameters().items():
            per = ", ".join(f"{p}={cls.PROFILES.get(p, {}).get(name, f.default)!r}" for p in PROFILE_NAMES)
            tp = getattr(hints[name], "__name__", str(hints[name]))
            lines.append(f"  {name} ({tp}; {per}): {f.metadata.get('help', '')}")
        return "\n".join(lines)
