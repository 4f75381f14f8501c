"""One dataclass config per recipe: YAML presets plus ``--key value`` command-line overrides.

Any flat dataclass whose fields are typed ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, unions of
these, or ``X | None`` works. The order of precedence is: dataclass defaults < the YAML file given with
``--config`` < ``--key value`` (or ``--key=value``) arguments. An unknown key, a value of the wrong type or a
missing value is a ``ValueError`` that names the key, the value and where it came from (file or command
line). A key's range is declared beside its field, ``width: Annotated[int, between(1, 1024)] = 64``, and
:func:`check_ranges` (called first in the dataclass's ``__post_init__``) checks every such rule in one place;
``__post_init__`` keeps only the checks that involve several keys.
``pyyaml`` is imported only when a YAML file is read or written.

``--help`` / ``-h`` prints every key with its type, default and the comment that follows it in the
dataclass source, grouped by the section comments (``# data``, ``# model``, ...) above them; see
:func:`config_help`. A dataclass may name ``POSITIONAL = ("model",)``: leading bare arguments fill those keys;
and ``OLD_NAMES = {"old_key": "new_key"}``: keys renamed, still accepted in a YAML file and on the command line until
:data:`mvssl_hub.version.MOVED_UNTIL`, with a ``FutureWarning`` that gives the new name.

Why not tyro / jsonargparse / draccus: each adds a dependency and its own error texts for what is ~250
lines here, and none keeps the precise "file X: config key Y got Z, expected W" messages the recipes
promise; the YAML presets stay flat files that ``--config`` reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import inspect
import io
import math
import sys
import tokenize
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from ..errors import ConfigError
from ..version import MOVED_UNTIL

__all__ = [
    "FRACTION", "Check", "HelpRequested", "above", "as_config_error", "at_least", "at_most", "between",
    "check_ranges", "config_defaults", "config_help", "config_to_dict", "dump_yaml", "field_docs", "field_types",
    "finite", "parse_config", "read_yaml", "run_cli",
]


class HelpRequested(Exception):
    """``--help`` / ``-h`` was given: :func:`run_cli` prints ``text`` and exits 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

C = TypeVar("C")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~"}



@dataclasses.dataclass(frozen=True)
class Check:
    """One rule on a config key's value, declared beside its field: ``limit: Annotated[int | None, at_least(1)]``.
    An unset optional key (None) passes every rule; a failed rule reads "config key 'X' = value: ``message``"."""

    ok: Callable[[Any], bool]
    message: str


def at_least(low: float, message: str = "") -> Check:
    return Check(lambda v: v >= low, message or f"must be >= {low}")


def at_most(high: float, message: str = "") -> Check:
    return Check(lambda v: v <= high, message or f"must be <= {high}")


def above(low: float, message: str = "") -> Check:
    return Check(lambda v: v > low, message or f"must be > {low}")


def between(low: float, high: float, note: str = "") -> Check:
    return Check(lambda v: low <= v <= high, f"must be in {low}..{high}" + (f" {note}" if note else ""))


def finite(ok: Callable[[Any], bool], message: str) -> Check:
    """``ok`` and a finite number (a float key read from YAML may be inf)."""
    return Check(lambda v: ok(v) and math.isfinite(v), message)


FRACTION = Check(lambda v: 0 < v <= 1, "must be in (0, 1]")


def check_ranges(cfg: Any) -> None:
    """ConfigError "config key 'X' = value: ..." for the first field (in declaration order) whose value fails a
    :class:`Check` declared in its ``Annotated[...]`` type."""
    for name, rules in _checks(type(cfg)):
        value = getattr(cfg, name)
        if value is None:
            continue
        for rule in rules:
            if not rule.ok(value):
                raise ConfigError(f"config key {name!r} = {value!r}: {rule.message}")


@functools.cache
def _checks(cls: type) -> tuple[tuple[str, tuple[Check, ...]], ...]:
    """(field, its rules) of a config class, in declaration order (annotations are evaluated once per class)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = ((f.name, tuple(r for r in getattr(hints[f.name], "__metadata__", ()) if isinstance(r, Check)))
             for f in dataclasses.fields(cls))
    return tuple((name, rules) for name, rules in found if rules)


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a dataclass (works with postponed annotations)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _is_flag(tp: Any) -> bool:
    """A bool key (``bool`` or ``bool | None``), which a bare ``--key`` / ``--no-key`` sets."""
    if tp is bool:
        return True
    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else ()
    return bool(args) and set(args) == {bool, type(None)}


def _unknown_key(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"{where}: unknown config key {key!r}{hint} (known keys: {', '.join(sorted(known))})")


def _coerce(value: Any, tp: Any, from_text: bool) -> Any:
    """``value`` as type ``tp`` or raise TypeError. Text (command line) is parsed; YAML values are checked."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        # None first so that "none" on the command line means None for Optional fields.
        ordered = sorted(args, key=lambda a: (a is not type(None), a is str))
        for arg in ordered:
            try:
                return _coerce(value, arg, from_text)
            except TypeError:
                continue
        raise TypeError
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            try:
                if _coerce(value, type(choice), from_text) == choice:
                    return choice
            except TypeError:
                continue
        raise TypeError
    if tp is type(None):
        if value is None or (from_text and str(value).strip().lower() in _NONE):
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                raise TypeError from None
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # command line, or YAML 1.1's "1e-3" (read as a string by PyYAML)
            try:
                return float(value.strip())
            except ValueError:
                raise TypeError from None
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError(f"unsupported config field type {tp!r}")


def _set(values: dict[str, Any], types_: dict[str, Any], key: str, raw: Any, where: str, from_text: bool) -> None:
    if key not in types_:
        raise _unknown_key(key, list(types_), where)
    try:
        values[key] = _coerce(raw, types_[key], from_text)
    except TypeError:
        raise ConfigError(
            f"{where}: config key {key!r} got {raw!r} ({type(raw).__name__}), expected {_type_name(types_[key])}"
        ) from None
    if isinstance(values[key], float) and not math.isfinite(values[key]):  # no setting means inf or nan
        raise ConfigError(f"{where}: config key {key!r} = {values[key]!r}: must be a finite number")


def _renamed(cls: type, keys: Sequence[str], where: str) -> dict[str, str]:
    """Old key -> new key for the old names among ``keys`` (what one source gave), each with a FutureWarning;
    ConfigError when the source gives a key under both its names."""
    old_names: dict[str, str] = getattr(cls, "OLD_NAMES", {})
    found = {key: old_names[key] for key in keys if key in old_names}
    for old, new in found.items():
        if new in keys:
            raise ConfigError(f"{where}: config keys {old!r} and {new!r} are one key (its old name and its new "
                              f"one); give {new!r} only")
        warnings.warn(f"{where}: config key {old!r} is now {new!r}; the old name goes in mvssl-hub {MOVED_UNTIL}",
                      FutureWarning, stacklevel=3)
    return found


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; ConfigError if the file is missing or is not a flat mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            presets = sorted(p.name for p in path.parent.glob("*.yaml"))
            if presets:
                hint = f"; files in {path.parent}: {', '.join(presets)}"
        raise ConfigError(f"config file {str(path)!r} does not exist{hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: config key {key!r} must be a scalar, got {type(value).__name__}")
    return data


def field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """Field name -> (section, description) from the dataclass source: a field's trailing ``# comment`` is its
    description; a comment line on its own (``# data``) starts a section. Empty strings where there are none."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, tuple[str, str]] = {}
    section, line_field, line_has_code = "", None, False
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and not line_has_code and tok.string in names:
            line_field = tok.string
            docs[line_field] = (section, "")
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if line_field is not None and line_has_code:
                docs[line_field] = (section, text)
            elif not line_has_code:
                section = text
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            line_field, line_has_code = None, False
        elif tok.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT):
            line_has_code = True
    return docs


def config_help(cls: type, prog: str, summary: str = "") -> str:
    """The ``--help`` text: usage, then every key with its type, default and description, by section."""
    types_ = field_types(cls)
    docs = field_docs(cls)
    positional = tuple(getattr(cls, "POSITIONAL", ()))
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else None) for f in dataclasses.fields(cls)}
    usage = " ".join([f"usage: {prog}", *(k.upper() for k in positional), "[--config FILE.yaml]", "[--key value ...]"])
    lines = [usage, ""] + ([summary.strip(), ""] if summary else [])
    lines += ["Values: --key value, --key=value; a bare --flag sets a bool key to true, --no-flag to false.",
              "Precedence: defaults < --config FILE.yaml < command line. Keys may use - or _.", ""]
    current = None
    for name, tp in types_.items():
        section, text = docs.get(name, ("", ""))
        if section != current:
            lines.append(f"{section or 'options'}:")
            current = section
        flag = name.upper() if name in positional else f"--{name}"
        default = "required" if name in positional and defaults[name] is None else f"default {defaults[name]!r}"
        lines.append(f"  {flag:<24} {_type_name(tp)}; {default}")
        if text:
            lines.append(f"  {'':<24} {text}")
    lines.append("  --config FILE.yaml       a preset: any of the keys above")
    old_names = getattr(cls, "OLD_NAMES", {})
    if old_names:
        lines.append(f"  old names, accepted until mvssl-hub {MOVED_UNTIL}: "
                     + ", ".join(f"--{old} (now --{new})" for old, new in old_names.items()))
    lines.append("  -h, --help               show this help and exit")
    return "\n".join(lines) + "\n"


def parse_config(cls: type[C], argv: Sequence[str] | None = None, *, config_flag: str = "config",
                 prog: str | None = None, summary: str = "") -> C:
    """Build ``cls`` from ``[POSITIONAL ...] [--config FILE] [--key value | --key=value | --flag] ...``.

    A bare ``--flag`` (followed by another ``--`` argument or nothing) sets a bool field to True. Keys may be
    written with ``-`` or ``_``. ``-h`` / ``--help`` raises :class:`HelpRequested` with :func:`config_help`.
    The dataclass's ``__post_init__`` runs last; its ValueError is re-raised as ConfigError.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        raise HelpRequested(config_help(cls, prog or Path(sys.argv[0]).name, summary))
    types_ = field_types(cls)
    pairs: list[tuple[str, str | None]] = []
    for key in getattr(cls, "POSITIONAL", ()):
        if argv and not argv[0].startswith("--"):
            pairs.append((key, argv.pop(0)))
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"command line: expected --key value, got {arg!r} (arguments: {' '.join(argv)})")
        key, eq, val = arg[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            pairs.append((key, val))
            i += 1
        elif i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
            pairs.append((key, argv[i + 1]))
            i += 2
        else:
            pairs.append((key, None))
            i += 1
    values: dict[str, Any] = {}
    config_files = [v for k, v in pairs if k == config_flag]
    if len(config_files) > 1:
        raise ConfigError(f"command line: --{config_flag} given {len(config_files)} times: {config_files}")
    if config_files:
        path = config_files[0]
        if path is None:
            raise ConfigError(f"command line: --{config_flag} needs a file path")
        preset = {str(key): raw for key, raw in read_yaml(path).items()}
        renamed = _renamed(cls, list(preset), f"config file {path}")
        for key, raw in preset.items():
            _set(values, types_, renamed.get(key, key), raw, f"config file {path}", from_text=False)
    renamed = _renamed(cls, [key for key, _ in pairs], "command line")
    for key, raw in pairs:
        if key == config_flag:
            continue
        key = renamed.get(key, key)
        if raw is None:
            if key in types_ and _is_flag(types_[key]):
                values[key] = True
                continue
            if key.startswith("no_") and key not in types_ and _is_flag(types_.get(key[3:])):
                values[key[3:]] = False  # --no-flag
                continue
            if key not in types_:
                raise _unknown_key(key, list(types_), "command line")
            raise ConfigError(f"command line: --{key} needs a value ({_type_name(types_[key])})")
        _set(values, types_, key, raw, "command line", from_text=True)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


@contextlib.contextmanager
def as_config_error(key: str, value: object) -> Iterator[None]:
    """Inside the block, a missing file or an unreachable Hub becomes a one-line ConfigError naming ``key``."""
    try:
        yield
    except (FileNotFoundError, ConnectionError) as e:
        raise ConfigError(f"config key {key!r} = {value!r}: {e}") from None


def config_defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value of a config dataclass (fields without a default are left out)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The dataclass as a plain, JSON-ready dict (field order kept)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def dump_yaml(cfg: Any) -> str:
    """The resolved config as YAML text, readable back with ``--config``."""
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def run_cli(main: Callable[[], object]) -> None:
    """Run a recipe's ``main()``: ``--help`` prints and exits 0; a ConfigError becomes one ``error: ...`` line and
    exit code 2, not a traceback. In a run of several processes, a failed collective whose roll call finds a
    process gone becomes one ``error: ...`` line naming its rank and machine, and exit code 1
    (:func:`mvssl_hub.train.collectives.lost_process_error`)."""
    try:
        main()
    except HelpRequested as help_:
        print(help_.text, end="")
        sys.exit(0)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        from .collectives import lost_process_error

        lost = lost_process_error(err)
        if lost is None:
            raise
        print(f"error: {lost}", file=sys.stderr, flush=True)
        sys.exit(1)
