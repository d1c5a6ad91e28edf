"""Typed configs: dataclass defaults < YAML preset < dotted CLI overrides.

Every recipe has one ``@dataclass`` config whose fields carry their help text and allowed range
(``name: int = option(3, "what it is", ge=1)``). Nested dataclasses are addressed with dots
(``--optim.lr 1e-4``). Unknown keys are errors that suggest the nearest valid keys (`unknown_key`: a close
spelling, the same last component in another section, or a field whose help says the words of the key), values
of the wrong type are errors that name the field;
values outside a field's range (and any non-finite float) are errors that name the field and the
allowed range (``check_config``, run by ``parse`` and by every recipe before it starts).

Renamed keys: a config class may map old dotted keys (relative to itself) to their new names in a class
attribute, ``__renamed__ = {"max_new_tokens": "sampling.max_new_tokens"}``; ``parse`` (CLI) and ``from_dict``
(YAML) then accept the old name for one release, with a one-line deprecation notice on stderr (`renamed_key`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
import sys
import types
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from saferlhf.errors import UserError


class ConfigError(UserError, ValueError):
    """A config key or value that does not fit the recipe's config dataclass."""


def option(default: Any = MISSING, help: str = "", *, factory: Any = None, positional: bool = False,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           allow_inf: bool = False) -> Any:
    """A dataclass field with its help text (``factory`` for mutable defaults) and allowed range.

    ``ge``/``gt``/``le``/``lt`` bound a number (each element of a list); ``None`` always passes for
    ``X | None`` fields. Float fields must be finite unless ``allow_inf``; NaN is never allowed.
    """
    meta = {"help": help, "positional": positional, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "allow_inf": allow_inf}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if is_dataclass(default):
        return field(default_factory=lambda d=default: dataclasses.replace(d), metadata=meta)
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


def range_text(meta: Any) -> str:
    """The allowed range of a field as text (``'>= 1'``, ``'> 0 and < 1'``), '' when unbounded."""
    parts = [f"{op} {meta[k]:g}" for k, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if meta.get(k) is not None]
    return " and ".join(parts)


def _out_of_range(value: Any, meta: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return ((meta.get("ge") is not None and not value >= meta["ge"])
            or (meta.get("gt") is not None and not value > meta["gt"])
            or (meta.get("le") is not None and not value <= meta["le"])
            or (meta.get("lt") is not None and not value < meta["lt"]))


def check_config(obj: Any, prefix: str = "") -> Any:
    """Raise ConfigError naming the first field whose value is outside its range or not finite."""
    for f in fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if is_dataclass(value):
            check_config(value, f"{key}.")
            continue
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, float) and (math.isnan(v) or (math.isinf(v) and not f.metadata.get("allow_inf"))):
                raise ConfigError(f"{key}: {v} is not a finite number"
                                  + (f"; allowed: {range_text(f.metadata)}" if range_text(f.metadata) else ""))
            if _out_of_range(v, f.metadata):
                raise ConfigError(f"{key}: {v!r} is out of range; allowed: {range_text(f.metadata)}")
    return obj


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    if optional:
        return f"{_type_name(inner)} | None"
    if get_origin(tp) is Literal:
        return "{" + ",".join(str(a) for a in get_args(tp)) + "}"
    if get_origin(tp) is list:
        return f"list[{_type_name(get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to type ``tp`` or raise ConfigError naming ``key``."""
    optional, inner = _is_optional(tp)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, inner, key)
    origin = get_origin(tp)
    try:
        if origin is Literal:
            choices = get_args(tp)
            for c in choices:
                if value == c or (isinstance(value, str) and str(c) == value):
                    return c
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        if origin is list:
            (elem,) = get_args(tp)
            if isinstance(value, str):
                value = [v for v in (value.split(",") if value else [])]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{key}: expected a list, got {value!r}")
            return [coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")
        if tp is int:
            if isinstance(value, bool):
                raise ConfigError(f"{key}: expected an int, got {value!r}")
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(float(value)) if "e" in value.lower() and float(value).is_integer() else int(value)
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        if tp is float:
            if isinstance(value, bool):
                raise ConfigError(f"{key}: expected a float, got {value!r}")
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{key}: expected a string, got {value!r}")
            return str(value)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}") from None
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, type, field metadata) of every non-dataclass field of a config, nested ones included."""
    out = []
    hints = _hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            out += leaf_fields(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, tp, f.metadata))
    return out


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """All dotted keys of a config dataclass."""
    return [key for key, _, _ in leaf_fields(cls, prefix)]


def nearest_keys(key: str, cls: type, prefix: str = "", n: int = 3) -> list[str]:
    """The valid keys of ``cls`` (dotted, after ``prefix``) nearest to an unknown ``key``, at most ``n``, best first:
    keys with the same last component (``max_new_tokens`` -> ``sampling.max_new_tokens``), then a close spelling of
    it (``rollout.max_new_token``, ``optim.lrr``), then keys it starts (``temp`` -> ``temperature``, ``kl`` ->
    ``kl_coef``), then keys whose help text says the key's words (``learning_rate`` -> ``optim.lr``, "peak
    learning rate"). Within each kind, the closer whole key first."""
    leaves = [(k, meta.get("help", "")) for k, _, meta in leaf_fields(cls, prefix)]
    last = key.rsplit(".", 1)[-1]

    def tail(k: str) -> str:
        return k.rsplit(".", 1)[-1]

    def ratio(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a, b).ratio()

    words = [w for w in re.split(r"[^a-z0-9]+", last.lower()) if w]
    phrase = re.compile(r"\b" + r"\s+".join(map(re.escape, words)) + r"\b") if len(words) > 1 else None
    kinds: list[list[str]] = [[], [], [], []]
    for k, help_ in leaves:
        t = tail(k)
        if t == last:
            kinds[0].append(k)
        elif ratio(last, t) >= 0.8:
            kinds[1].append(k)
        elif t.startswith(last) and (len(last) >= 4 or t[len(last)] == "_"):
            kinds[2].append(k)
        elif phrase is not None and (m := phrase.search(help_.lower())) and m.start() < 20:
            kinds[3].append(k)  # the words lead the help ("peak learning rate"), not a side remark
    found = [k for kind in kinds for k in sorted(kind, key=lambda k: -ratio(key, k))]
    return found[:n]


def unknown_key(cls: type, key: str, prefix: str = "") -> ConfigError:
    """The error for an unknown dotted ``key`` of config ``cls`` (whose keys start with ``prefix``): the nearest
    valid keys (`nearest_keys`), else the keys of the section the key names (``inner.bogus``: the ``inner.*``
    keys); the full list is left to ``--help``. ``prefix``: ``cls`` is the nested config at that dotted place."""
    near = nearest_keys(key, cls, prefix)
    text = f"unknown config key '{key}'"
    if near:
        text += "; did you mean " + " or ".join(f"'{k}'" for k in near) + "?"
    else:
        name, sub = _section(cls, key[len(prefix):]) or ("", cls)
        section = prefix + (f"{name}." if name else "")
        if section:  # the key names a section (``inner.bogus``): its keys, a short list
            text += f"; the keys of {section.rstrip('.')}: " + ", ".join(valid_keys(sub, section))
    return ConfigError(f"{text} (--help lists every key)")


def _section(cls: type, key: str) -> tuple[str, type] | None:
    """(dotted name, class) of the deepest nested config that the dotted ``key`` walks through, None at the top."""
    tp, walked = cls, []
    for part in key.split(".")[:-1]:
        hint = _hints(tp).get(part)
        if hint is None or not is_dataclass(hint):
            break
        tp = hint
        walked.append(part)
    return (".".join(walked), tp) if walked else None


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", base: Any = None, root: type | None = None) -> Any:
    """Build ``cls`` from a (nested) mapping, starting from ``base`` or the defaults. ``root``: the top config
    when ``cls`` is nested in it at ``prefix`` (an unknown key is then matched against every key of ``root``)."""
    obj = base if base is not None else cls()
    data = _move_renamed(cls, _aliased(cls, data), prefix)
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    if root is None and not prefix:
        root = cls
    for key, value in data.items():
        if key not in names:
            raise unknown_key(root, f"{prefix}{key}") if root is not None else unknown_key(cls, f"{prefix}{key}",
                                                                                          prefix)
        tp = hints[key]
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
            setattr(obj, key, from_dict(tp, value, f"{prefix}{key}.", getattr(obj, key), root))
        else:
            setattr(obj, key, coerce(value, tp, prefix + key))
    return obj


def renamed_keys(cls: type, prefix: str = "") -> dict[str, str]:
    """Every old dotted key of a config (its classes' ``__renamed__`` maps, nested ones included) -> its new key."""
    out = {prefix + old: prefix + new for old, new in getattr(cls, "__renamed__", {}).items()}
    hints = _hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            out |= renamed_keys(hints[f.name], f"{prefix}{f.name}.")
    return out


def _deprecated(old: str, new: str) -> None:
    print(f"saferlhf: {old} is deprecated, use {new} (the old name goes in the next release)", file=sys.stderr)


def _aliased(cls: type, data: Any) -> Any:
    """``data`` (a YAML mapping for ``cls``) with the keys of ``cls.__aliases__`` (another name for a field, e.g.
    ``lambda`` for ``lagrange``: permanent, no notice) under their field's name."""
    aliases = getattr(cls, "__aliases__", None)
    if not aliases or not isinstance(data, dict) or not any(k in data for k in aliases):
        return data
    out = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name in out:
            raise ConfigError(f"config keys '{key}' and '{name}' name the same field; give one")
        out[name] = value
    return out


def renamed_key(cls: type, key: str) -> str:
    """The current name of a dotted key: an old name declared in a ``__renamed__`` map (of ``cls`` or of the nested
    config the key walks through) becomes the new one, with a deprecation notice on stderr; others pass as is. A
    segment named in a class's ``__aliases__`` (another permanent name of a field) becomes the field's name."""
    parts, tp = key.split("."), cls
    for i, part in enumerate(parts):
        if (alias := getattr(tp, "__aliases__", {}).get(part)) is not None:
            parts[i] = part = alias
            key = ".".join(parts)
        new = getattr(tp, "__renamed__", {}).get(".".join(parts[i:]))
        if new is not None:
            full = ".".join(parts[:i] + [new])
            _deprecated(f"--{key}", f"--{full}")
            return full
        hint = _hints(tp).get(part) if is_dataclass(tp) else None
        if hint is None or not is_dataclass(hint):
            return key
        tp = hint
    return key


def _move_renamed(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``data`` (a YAML mapping for ``cls``) with the old keys of ``cls.__renamed__`` moved to their new places."""
    renames = getattr(cls, "__renamed__", None)
    if not renames or not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    for old, new in renames.items():
        *path, last = old.split(".")
        node: Any = data
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            continue
        if not path and isinstance(node[last], dict) and is_dataclass(_hints(cls).get(old)):
            continue  # a mapping under a name that is now a nested config (redteam's judge): the new form
        value = node.pop(last)
        _deprecated(f"config key '{prefix}{old}'", f"'{prefix}{new}'")
        *path, last = new.split(".")
        target = data
        for p in path:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{prefix}{p}: expected a mapping, got {target!r}")
        if last in target:
            raise ConfigError(f"config keys '{prefix}{old}' (deprecated) and '{prefix}{new}' are both given; "
                              f"keep '{prefix}{new}'")
        target[last] = value
    return data


def set_dotted(obj: Any, key: str, value: Any) -> None:
    """Set ``a.b.c`` on a nested config dataclass from a string value."""
    parts = key.split(".")
    target, cls = obj, type(obj)
    root = type(obj)
    for p in parts[:-1]:
        hints = _hints(cls)
        if p not in hints or not is_dataclass(hints[p]):
            raise unknown_key(root, key)
        target, cls = getattr(target, p), hints[p]
    hints = _hints(cls)
    if parts[-1] not in hints or is_dataclass(hints[parts[-1]]):
        raise unknown_key(root, key)
    setattr(target, parts[-1], coerce(value, hints[parts[-1]], key))


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of config keys")
    return data


def parse(cls: type, argv: list[str], positional: list[str] | None = None) -> Any:
    """defaults < ``--config FILE.yaml`` < ``--dotted.key value`` overrides.

    ``positional`` names the fields that bare (non ``--``) arguments fill, in order.
    Boolean fields accept ``--flag`` alone as ``true``.
    """
    positional = list(positional or [])
    obj = cls()
    overrides: list[tuple[str, Any]] = []
    bare: list[str] = []
    i = 0
    yaml_path = None
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            key = key.replace("-", "_") if key not in valid_keys(cls) else key
            key = renamed_key(cls, key)
            if key == "config":
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise ConfigError("--config needs a YAML path")
                    val = argv[i]
                yaml_path = val
            elif eq:
                overrides.append((key, val))
            else:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                if _is_bool_key(cls, key) and (nxt is None or nxt.startswith("--") or
                                               nxt.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off")):
                    overrides.append((key, "true"))
                elif _is_list_key(cls, key):  # --policies a=x b=y: every value up to the next --key
                    values = []
                    while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                        values += [v for v in argv[i + 1].split(",") if v]
                        i += 1
                    if not values:
                        raise ConfigError(f"--{key} needs at least one value")
                    overrides.append((key, values))
                else:
                    if nxt is None:
                        raise ConfigError(f"--{key} needs a value")
                    overrides.append((key, nxt))
                    i += 1
        else:
            bare.append(a)
        i += 1
    if len(bare) > len(positional):
        raise ConfigError(f"unexpected argument(s) {bare[len(positional):]}; expected --key value pairs")
    if yaml_path is not None:
        obj = from_dict(cls, load_yaml(yaml_path), base=obj)
    for name, val in zip(positional, bare):
        set_dotted(obj, name, val)
    for key, val in overrides:
        set_dotted(obj, key, val)
    return check_config(obj)


def _is_list_key(cls: type, key: str) -> bool:
    try:
        tp: Any = cls
        for p in key.split("."):
            tp = _hints(tp)[p]
    except (KeyError, TypeError):
        return False
    return get_origin(_is_optional(tp)[1]) is list


def _is_bool_key(cls: type, key: str) -> bool:
    try:
        tp: Any = cls
        for p in key.split("."):
            tp = _hints(tp)[p]
        return tp is bool
    except (KeyError, TypeError):
        return False


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def save_config(obj: Any, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically)."""
    from saferlhf.files import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(obj), sort_keys=False))


def help_text(cls: type, prefix: str = "", instance: Any = None) -> list[str]:
    """One line per config field: ``--key TYPE (default: X)  help``. Defaults are read from an instance, so
    a nested config shows the values its parent sets (ppo's actor_optim.lr 1e-5, not OptimConfig's 2e-5)."""
    lines = []
    hints = _hints(cls)
    if instance is None:
        instance = cls()
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            lines += help_text(tp, f"{prefix}{f.name}.", getattr(instance, f.name))
            continue
        default = getattr(instance, f.name)
        allowed = range_text(f.metadata)
        lines.append(f"  --{prefix}{f.name} {_type_name(tp)} (default: {json.dumps(default)}"
                     + (f"; allowed: {allowed}" if allowed else "") + ")\n"
                     f"        {f.metadata.get('help', '')}")
    for alias, name in getattr(cls, "__aliases__", {}).items():
        lines.append(f"  --{prefix}{alias}.* is another name for --{prefix}{name}.*")
    if not prefix and (renames := renamed_keys(cls)):
        lines.append("deprecated names (accepted for one more release):")
        lines += [f"  --{old} -> --{new}" for old, new in renames.items()]
    return lines
