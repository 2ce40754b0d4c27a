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
import textwrap
import types
import typing
from functools import lru_cache
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
        parser.add_argument(flag, **kwargs)


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
        return [one(v) for v in items]
    return one(value)


def unknown_key_error(key: str, known: list[str], where: str) -> ValueError:
    """The error for a key a file may not set, naming it, ``where`` and the closest known keys."""
    import difflib

    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ValueError(f"{where}: unknown key {key!r}{hint}")
