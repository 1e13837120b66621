"""Response schemas derived from the library's result dataclasses, so the two cannot drift apart.

A :class:`Shape` says how one library type appears in a JSON answer: which of its fields the JSON
leaves out (and why), which it renames, which nested dataclass fields become nested objects or are
inlined, and which keys the service adds. :func:`build_model` turns it into a pydantic model for
FastAPI's ``response_model`` (and so for ``/openapi.json``). Every field the dataclass has and the shape
does not omit becomes a schema field, typed from the dataclass annotation: a field added to a library
type shows up in the schema without an edit here (tests/test_service_schema.py holds that).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, create_model

__all__ = ["Shape", "build_model", "values"]


@dataclass(frozen=True)
class Shape:
    """How instances of the dataclass ``source`` appear as JSON objects.

    ``omit``: field -> why the JSON leaves it out (names starting with ``_`` are private state, always
    left out). ``only``: instead of ``omit``, a projection the library itself makes (such as a story's
    representative as just ``id`` and ``text``). ``properties``: read-only properties the JSON carries.
    ``rename``: field -> JSON key. ``nested``: field -> shape of the dataclass it holds (alone or in a
    list). ``inline``: field -> shape whose keys are spliced into this object in its place. ``optional``:
    keys the JSON may carry as null or not at all (default None in the schema). ``extra``: key ->
    (type, description) the service adds. ``first``: keys that lead, in this order (the JSON's order since
    the service's first release); the rest follow in field order. ``describe``: key -> description.
    """

    source: type
    name: str
    doc: str | None = None
    omit: Mapping[str, str] = field(default_factory=dict)
    only: tuple[str, ...] | None = None
    properties: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    nested: Mapping[str, Shape] = field(default_factory=dict)
    inline: Mapping[str, Shape] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    extra: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    first: tuple[str, ...] = ()
    describe: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.source):
            raise TypeError(f"{self.source!r} is not a dataclass")
        if self.only is not None and self.omit:
            raise ValueError(f"{self.name}: give omit or only, not both")
        names = {f.name for f in dataclasses.fields(self.source)}
        # A stale name (a field the library renamed or dropped) must fail here, not pass silently.
        named = (("omit", self.omit), ("only", self.only or ()), ("rename", self.rename))
        for what, listed in (*named, ("nested", self.nested), ("inline", self.inline)):
            unknown = set(listed) - names
            if unknown:
                raise ValueError(f"{self.name}: {what} names no field of {self.source.__name__}: {sorted(unknown)}")
        for prop in self.properties:
            if not isinstance(getattr(self.source, prop, None), property):
                raise ValueError(f"{self.name}: {self.source.__name__}.{prop} is not a property")
        # describe may name more keys: one table of descriptions serves every projection of a type.
        for what, listed in (("optional", self.optional), ("first", self.first)):
            unknown = set(listed) - set(self.keys())
            if unknown:
                raise ValueError(f"{self.name}: {what} names no key of the JSON: {sorted(unknown)}")

    def fields(self) -> list[dataclasses.Field]:
        """The dataclass fields the JSON carries, in declaration order."""
        kept = [f for f in dataclasses.fields(self.source) if not f.name.startswith("_")]
        if self.only is not None:
            return [f for f in kept if f.name in self.only]
        return [f for f in kept if f.name not in self.omit]

    def keys(self) -> list[str]:
        """The JSON keys, in order: fields (renamed, inlined), properties, extras, with ``first`` leading."""
        keys: list[str] = []
        for f in self.fields():
            if f.name in self.inline:
                keys += self.inline[f.name].keys()
            else:
                keys.append(self.rename.get(f.name, f.name))
        keys += [*self.properties, *self.extra]
        leading = [k for k in self.first if k in keys]
        return leading + [k for k in keys if k not in leading]


def values(shape: Shape, instance: Any) -> dict[str, Any]:
    """The shape's fields and properties of ``instance`` by JSON key (nested values as they are).

    For a library type without a ``to_dict`` (``AddResult``): the answer is built from the instance
    through the same shape that declares its schema.
    """
    out: dict[str, Any] = {}
    for f in shape.fields():
        value = getattr(instance, f.name)
        if f.name in shape.inline:
            out.update(values(shape.inline[f.name], value))
        else:
            out[shape.rename.get(f.name, f.name)] = value
    for prop in shape.properties:
        out[prop] = getattr(instance, prop)
    return out


# One model per shape name in the process: OpenAPI names components by model name, and two different
# models under one name would be renamed by FastAPI to long module-qualified names.
_BUILT: dict[str, tuple[Shape, type[BaseModel]]] = {}


def build_model(shape: Shape) -> type[BaseModel]:
    """The pydantic model of ``shape`` (nested shapes become models of their own, named by them)."""
    if shape.name in _BUILT:
        known, model = _BUILT[shape.name]
        if known != shape:
            raise ValueError(f"two different shapes are named {shape.name}")
        return model
    definitions = _definitions(shape)
    order = shape.keys()
    model = create_model(  # type: ignore[call-overload]
        shape.name,
        __doc__=shape.doc,
        __module__=__name__,
        **{key: definitions[key] for key in order},
    )
    _BUILT[shape.name] = (shape, model)
    return model


def _definitions(shape: Shape) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for f in shape.fields():
        if f.name in shape.inline:
            out.update(_definitions(shape.inline[f.name]))
            continue
        key = shape.rename.get(f.name, f.name)
        hint = _field_hint(shape.source, f)
        if f.name in shape.nested:
            inner = shape.nested[f.name]
            hint = _substitute(hint, inner.source, build_model(inner))
        # Required unless listed optional: a dataclass default says how the library builds the value,
        # not whether the JSON carries the key (AddResult's counters default to 0 and are always sent).
        default: Any = None if key in shape.optional else ...
        out[key] = (hint, Field(default, description=shape.describe.get(key)))
    for prop in shape.properties:
        hint = typing.get_type_hints(getattr(shape.source, prop).fget)["return"]
        default = None if prop in shape.optional else ...
        out[prop] = (hint, Field(default, description=shape.describe.get(prop)))
    for key, (hint, description) in shape.extra.items():
        default = None if key in shape.optional else ...
        out[key] = (hint, Field(default, description=description))
    return out


def _field_hint(cls: type, f: dataclasses.Field) -> Any:
    """The annotation of ``f`` as a type (library modules use ``from __future__ import annotations``).

    Resolved in the module of the class that declares the field (a subclass may live elsewhere), and
    field by field rather than with ``typing.get_type_hints(cls)``: a private field annotated with a name
    imported only for type checkers must not break the schema of the public ones.
    """
    if not isinstance(f.type, str):
        return f.type
    owner = next((c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {})), cls)
    holder = types.SimpleNamespace(__annotations__={f.name: f.type})
    return typing.get_type_hints(holder, globalns=dict(vars(sys.modules[owner.__module__])))[f.name]


def _substitute(hint: Any, source: type, model: type[BaseModel]) -> Any:
    """``hint`` with the dataclass ``source`` replaced by ``model`` (``Member`` -> model, ``list[Member]`` -> list)."""
    if hint is source:
        return model
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if not args:
        raise TypeError(f"{hint!r} does not hold {source.__name__}: nest a shape only on a field of its type")
    replaced = tuple(_substitute(a, source, model) if _holds(a, source) else a for a in args)
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, replaced)
    return origin[replaced if len(replaced) > 1 else replaced[0]]


def _holds(hint: Any, source: type) -> bool:
    return hint is source or any(_holds(a, source) for a in typing.get_args(hint))
