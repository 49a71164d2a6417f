"""Dataclass configs: defaults in code, optionally a YAML file, then ``key=value`` overrides.

Every command's config is a dataclass whose fields carry a ``help`` in their metadata. The order
of precedence is defaults < YAML < CLI flags. Unknown keys and ill-typed values raise a
:class:`ConfigError` naming the key and the file, never a traceback from deep inside.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be applied."""


def field(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING) -> Any:  # noqa: A002
    """A dataclass field with a help string (shown by ``rlhfkit <cmd> --help`` and in docs)."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: cannot read {value!r} as {annotation}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, key) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {annotation.__name__}, got {value!r}")
        return build_config(annotation, value, prefix=f"{key}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc
        if as_float != int(as_float):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from exc
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(value)
    return value


def build_config(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from a (possibly nested) mapping, checking keys and types."""
    values = apply_renames(cls, values, prefix)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; "
                          f"valid keys: {sorted(prefix + k for k in known)}")
    kwargs = {}
    for name, value in values.items():
        default = _field_default(known[name])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            value = merge_values(_shallow_fields(default), value)
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    return cls(**kwargs)


def apply_renames(cls: type, values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``values`` with every deprecated key (``RENAMED`` of ``cls`` and its nested configs) moved to its new name.

    Each move warns once (FutureWarning); an old key given together with its new name is an error.
    """
    renamed: dict[str, str] = getattr(cls, "RENAMED", {})
    out = dict(values)
    for old, new in renamed.items():
        if old not in out:
            continue
        value = out.pop(old)
        *parents, leaf = new.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            child = _shallow_fields(child) if dataclasses.is_dataclass(child) else child
            node[part] = dict(child) if isinstance(child, Mapping) else {}
            node = node[part]
        if leaf in node:
            raise ConfigError(f"both `{prefix}{old}` and `{prefix}{new}` are given; `{prefix}{old}` is the old name "
                              f"of `{prefix}{new}`: keep only `{prefix}{new}`")
        node[leaf] = value
        _warn_renamed(prefix + old, prefix + new)
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = _dataclass_type(hints[spec.name])
        if nested is not None and isinstance(out.get(spec.name), Mapping):
            out[spec.name] = apply_renames(nested, out[spec.name], f"{prefix}{spec.name}.")
    return out


def _warn_renamed(old: str, new: str) -> None:
    """Tell the user that ``old`` is deprecated in favour of ``new`` (a FutureWarning, shown by default)."""
    warnings.warn_explicit(f"`{old}` is renamed `{new}`; the old name will be removed in the next release",
                           FutureWarning, filename="rlhfkit config", lineno=0, module="rlhfkit.config")


def _dataclass_type(annotation: Any) -> type | None:
    """The dataclass named by ``annotation`` (also inside ``X | None``), else None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)), None)
    return None


def _field_default(spec: dataclasses.Field) -> Any:
    """The field's default value (calling its factory), or None when it has none."""
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None if spec.default is dataclasses.MISSING else spec.default


def _shallow_fields(instance: Any) -> dict[str, Any]:
    """A dataclass instance as a mapping of its fields; nested dataclasses become mappings too."""
    return {f.name: (_shallow_fields(v) if dataclasses.is_dataclass(v := getattr(instance, f.name)) else v)
            for f in dataclasses.fields(instance)}


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a": {"b": "1"}, "c": "x"}`` (values typed later)."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        parts = key.strip().split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    return tree


def merge_values(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key (later sources win)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: Mapping[str, Any] | Iterable[str] | None = None) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path``, then by ``overrides``.

    ``overrides`` is a mapping (typer options that were given) or ``key=value`` strings. Deprecated
    keys (a config's ``RENAMED``) are moved to their new names per source, so a later source still wins.
    """
    values: dict[str, Any] = read_yaml(path) if path else {}
    try:
        values = apply_renames(cls, values)
        if overrides:
            # a typer option that was not given arrives as None; a ``key=null`` string means None itself
            extra = ({k: v for k, v in overrides.items() if v is not None} if isinstance(overrides, Mapping)
                     else parse_overrides(overrides))
            values = merge_values(values, apply_renames(cls, extra))
        return build_config(cls, values)
    except ConfigError as exc:
        where = f" (in {path})" if path else ""
        raise ConfigError(f"{exc}{where}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-serialisable dict of a config dataclass (paths as strings)."""
    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value
    return {k: convert(v) for k, v in dataclasses.asdict(config).items()}


def save_config(config: Any, path: str | Path) -> None:
    """Write ``config`` as YAML (the run directory keeps the exact config it ran with)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
