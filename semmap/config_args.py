"""Command-line options read from config dataclasses, and option values from files.

A config dataclass documents each field with an attribute docstring (the string literal
under it). :func:`add_dataclass_arguments` turns chosen fields into ``argparse`` options
whose default is the field's default and whose help is that docstring, so a default is
written once (in the dataclass); :func:`config_kwargs` reads them back from the parsed
arguments. :func:`coerce_option` and :func:`unknown_key_error` check a value given by a
file (``semmap batch`` manifests, ``semmap map --config``) as the option's parser would.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

_NO_DEFAULT = object()


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> attribute docstring (whitespace collapsed) of a dataclass, inherited ones included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (built at run time)
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def field_help(cls: type, name: str) -> str:
    """A field's docstring as ``--help`` shows it (reST double backquotes dropped)."""
    return field_docs(cls).get(name, "").replace("``", "")


def field_default(cls: type, name: str) -> Any:
    """The default of a dataclass field (calling its default factory); ``_NO_DEFAULT`` when it has none."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


def _scalar_type(cls: type, name: str) -> type | None:
    """The argparse ``type`` of a field: its annotation without ``None``; None for str / bool / unknown."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0] if len(args) == 1 else None
    if typing.get_origin(hint) is tuple:  # tuple[float, ...]: nargs="+" of the item type
        hint = typing.get_args(hint)[0]
    return hint if hint in (int, float) or (isinstance(hint, type) and hint not in (str, bool)) else None


def dest_of(flag: str) -> str:
    """The ``argparse`` dest of a long flag: ``--voxel-size`` -> ``voxel_size``."""
    return flag.lstrip("-").replace("-", "_")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    flags: dict[str, str],
    **options: dict[str, Any],
) -> None:
    """Add one option per ``flags`` entry (field name -> flag, in that order) of dataclass ``cls``.

    Each option's default is the field's default, its ``type`` the field's annotation (int,
    float, a path type; ``None`` allowed) and its help the field's docstring followed by the
    default. A bool field that defaults to False becomes a ``store_true`` switch.
    ``options[field]`` gives extra ``add_argument`` keywords (``choices``, ``metavar``,
    ``nargs``, or a ``help`` / ``default`` that replaces the derived one).

    Raises:
        ValueError: a field that ``cls`` does not have (a programming error, named).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    for name in set(flags) | set(options):
        if name not in names:
            raise ValueError(f"{cls.__name__} has no field {name!r} (flags: {flags})")
    for name, flag in flags.items():
        extra = dict(options.get(name, {}))
        default = extra.pop("default", field_default(cls, name))
        if default is _NO_DEFAULT:
            default = None
        doc = field_help(cls, name).replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": dest_of(flag), "default": default}
        if isinstance(default, bool) and default is False and "action" not in extra:
            kwargs["action"] = "store_true"
            kwargs["help"] = doc
        else:
            typ = _scalar_type(cls, name)
            if typ is not None and "choices" not in extra:
                kwargs["type"] = typ
            kwargs["help"] = doc if default is None else f"{doc} (default %(default)s)".lstrip()
        kwargs.update(extra)
        if isinstance(default, tuple) and "nargs" in kwargs and "action" not in kwargs:
            kwargs["action"] = StoreTuple  # a tuple field parses to a tuple, as its default is
        parser.add_argument(flag, **kwargs)


class StoreTuple(argparse.Action):
    """Store the values of an ``nargs`` option as a tuple (the type of a tuple dataclass field)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, tuple(values))


def config_kwargs(args: argparse.Namespace, cls: type, flags: dict[str, str]) -> dict[str, Any]:
    """Field name -> parsed value of each ``flags`` option (field -> flag) of ``cls``; an option the
    parser did not define (a namespace of another command) gives the field's default."""
    out = {}
    for name, flag in flags.items():
        default = field_default(cls, name)
        value = getattr(args, dest_of(flag), default)
        if value is not _NO_DEFAULT:
            out[name] = value
    return out


# ---------------------------------------------------------------------- values from files
def coerce_option(action: argparse.Action, value: Any, where: str) -> Any:
    """A value read from a file as the option's parser would give it (type, nargs, choices).

    Raises:
        ValueError: a value the option does not accept; the message starts with ``where``.
    """
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return action.const if value else action.default
    if value is None:
        return None
    convert = action.type if callable(action.type) else (lambda v: v)

    def one(v: Any) -> Any:
        if isinstance(v, (dict, list)):
            raise ValueError(f"{where}: expected a single value, got {v!r}")
        try:
            out = convert(v) if action.type is not None else v
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {v!r} is not a valid {getattr(action.type, '__name__', 'value')} ({e})") from None
        if action.choices is not None and out not in action.choices:
            raise ValueError(f"{where}: {out!r} is not one of {sorted(action.choices)}")
        return out

    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not items:
            raise ValueError(f"{where}: needs at least one value")
        values = [one(v) for v in items]
        return tuple(values) if isinstance(action, StoreTuple) else values
    return one(value)


def unknown_key_error(key: str, known: list[str], where: str) -> ValueError:
    """The error for a key a file may not set, naming it, ``where`` and the closest known keys."""
    import difflib

    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ValueError(f"{where}: unknown key {key!r}{hint}")


def load_config_file(path: Path, parser: argparse.ArgumentParser, keys: dict[str, str]) -> dict[str, Any]:
    """dest -> value of the options a YAML (or JSON) file sets; ``keys``: file key -> ``parser`` dest.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, not a mapping, an unknown key or a bad value (named with the file).
    """
    from sensors.io import read_yaml

    path = Path(path)
    doc = read_yaml(path, "config file")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a mapping of option names to values, got {type(doc).__name__}")
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for key, value in doc.items():
        if key not in keys:
            raise unknown_key_error(str(key), list(keys), str(path))
        dest = keys[key]
        out[dest] = coerce_option(actions[dest], value, f"{path}: {key}")
    return out


def effective_config(args: argparse.Namespace, keys: dict[str, str]) -> dict[str, Any]:
    """File key -> parsed value of every option in ``keys`` (file key -> dest), as plain YAML types
    (paths as strings): what :func:`load_config_file` reads back to the same options."""
    out = {}
    for key, dest in keys.items():
        value = getattr(args, dest)
        out[key] = str(value) if isinstance(value, PurePath) else value
    return out


class _ConfigFileParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose ``--config FILE`` sets option defaults before the command line is
    parsed, so that flags given on the command line override the file (see :func:`accept_config_file`)."""

    config_keys: Callable[[], dict[str, str]]

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config", type=Path, default=None)
        known, _ = pre.parse_known_args(args)
        if known.config is not None:
            try:
                self.set_defaults(**load_config_file(known.config, self, self.config_keys()))
            except (OSError, ValueError) as e:
                self.error(str(e))
        return super().parse_known_args(args, namespace)


def accept_config_file(parser: argparse.ArgumentParser, keys: Callable[[], dict[str, str]]) -> None:
    """Give ``parser`` a ``--config FILE.yaml`` option: the file's keys (``keys()``: file key -> dest)
    set the options, and flags on the command line override them. A file that does not exist, is
    not a mapping, or has an unknown key or a bad value ends the parse with an argparse error
    naming the file and the key."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE.yaml",
        help="read options from a YAML file whose keys are the config field names (as in a `semmap batch` "
        "manifest: voxel_size_m, depth_max_m, encoder, ...); flags on the command line override it",
    )
    parser.__class__ = _ConfigFileParser  # the subparser action calls parser.parse_known_args(arg_strings)
    parser.config_keys = keys  # type: ignore[attr-defined]
