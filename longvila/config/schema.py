"""Generate the JSON Schema of `config.yaml` from the dataclasses of the `longvila.config` package.

The dataclasses are the source of truth; the schema (`workflow/schemas/config.schema.yaml`, used by
`snakemake.utils.validate` at DAG build) is generated from them, with each field's docstring as its
description and its default filled in. The walk starts at `Config` and follows each field's type into
whichever module of the package defines it (`field_docs` reads each class's own source). A unit test fails
when the checked-in file is out of date.

    python -m longvila.config.schema > workflow/schemas/config.schema.yaml
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any

import yaml

from longvila.config.core import Config
from longvila.config.data import UPSAMPLE_MODES

ENUMS = {("PackConfig", "upsample"): list(UPSAMPLE_MODES)}


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after each field) of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_schema(tp: Any) -> dict:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _type_schema(args[0])
        if "type" in inner and not dataclasses.is_dataclass(args[0]):
            return {**inner, "type": [inner["type"], "null"]}
        # a section that may be null (model.warm_start): anyOf with null first, so that snakemake's
        # validate(set_default=True), which fills defaults before checking the type, stops at null
        return {"anyOf": [{"type": "null"}, inner]}
    if dataclasses.is_dataclass(tp):
        return dataclass_schema(tp)
    if origin is list:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(typing.get_args(tp)[1])}
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[tp]}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if isinstance(value, list):
            return [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return dataclasses.MISSING


def dataclass_schema(cls: type) -> dict:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name])
        if (cls.__name__, f.name) in ENUMS:
            prop["enum"] = ENUMS[(cls.__name__, f.name)]
        prop = {"description": docs.get(f.name, ""), **prop}
        default = _default(f)
        if default is dataclasses.MISSING:
            required.append(f.name)
        elif not dataclasses.is_dataclass(hints[f.name]):
            prop["default"] = default
        props[f.name] = prop
    schema = {"type": "object", "description": " ".join((cls.__doc__ or "").split()), "properties": props,
              "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def config_schema() -> dict:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **dataclass_schema(Config)}


def render() -> str:
    header = "# Generated from longvila/config/ by `python -m longvila.config.schema`; do not edit by hand.\n"
    return header + yaml.safe_dump(config_schema(), sort_keys=False, width=110)


if __name__ == "__main__":
    print(render(), end="")
