"""The typed ReplicationEval models and the CRD's OpenAPI schema state the same API.

Compared field by field, both ways, for the spec and the status: names, JSON types, enums,
which fields are required, defaults (the CRD's, with the defaults of nested fields applied as
the API server applies them), and whether unknown fields are kept. The last tests change a copy
of either side and show that the comparison notices.
"""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, create_model

from agentmatrix import scenarios
from agentmatrix.api.replicationeval import EvalSpec, EvalStatus, ModelSpec
from agentmatrix.api.vocabulary import SCENARIO_NAMES

CRD = Path(__file__).resolve().parents[2] / "crds" / "agentmatrix.dev_replicationevals.yaml"


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _without_none(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` as the API server stores it: missing fields that have a default get it, recursively."""
    if isinstance(value, dict) and schema.get("type") == "object":
        filled = dict(value)
        for name, prop in (schema.get("properties") or {}).items():
            if name not in filled and "default" in prop:
                filled[name] = copy.deepcopy(prop["default"])
            if name in filled:
                filled[name] = with_defaults(prop, filled[name])
        return filled
    if isinstance(value, list) and schema.get("type") == "array":
        return [with_defaults(schema.get("items") or {}, item) for item in value]
    return value


def type_differences(annotation: Any, schema: dict[str, Any], where: str) -> list[str]:
    annotation, _ = _without_none(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    kind = schema.get("type")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_differences(annotation, schema, where)
    if origin is Literal:
        found = []
        if kind != "string":
            found.append(f"{where}: a word list in the model, type {kind} in the CRD")
        if set(args) != set(schema.get("enum") or []):
            found.append(f"{where}: enum {sorted(args)} in the model, {schema.get('enum')} in the CRD")
        return found
    if "enum" in schema:
        return [f"{where}: enum {schema['enum']} in the CRD, free {annotation} in the model"]
    if origin in (tuple, list):
        if kind != "array":
            return [f"{where}: an array in the model, type {kind} in the CRD"]
        return type_differences(args[0], schema.get("items") or {}, f"{where}[]")
    if origin is dict:
        if kind != "object" or not schema.get("x-kubernetes-preserve-unknown-fields"):
            return [f"{where}: a free mapping in the model, not a free object in the CRD"]
        return []
    expected = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(annotation)
    if expected != kind:
        return [f"{where}: {annotation} in the model, type {kind} in the CRD"]
    return []


def model_differences(model: type[BaseModel], schema: dict[str, Any], where: str) -> list[str]:
    """Every way `model` and the CRD's object `schema` disagree, each naming the field's path."""
    if schema.get("type") != "object":
        return [f"{where}: an object in the model, type {schema.get('type')} in the CRD"]
    found: list[str] = []
    keeps_unknown = model.model_config.get("extra") == "allow"
    if keeps_unknown != bool(schema.get("x-kubernetes-preserve-unknown-fields")):
        found.append(f"{where}: unknown fields kept on one side only")
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    for name in sorted(set(properties) - set(fields)):
        found.append(f"{where}.{name}: in the CRD only")
    for name in sorted(set(fields) - set(properties)):
        found.append(f"{where}.{name}: in the model only")
    for name in sorted(set(fields) & set(properties)):
        field, prop, path = fields[name], properties[name], f"{where}.{name}"
        found += type_differences(field.annotation, prop, path)
        if field.is_required() != (name in required):
            found.append(f"{path}: required on one side only")
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        ours = model_default(default)
        theirs = with_defaults(prop, prop["default"]) if "default" in prop else None
        if ours != theirs:
            found.append(f"{path}: default {ours!r} in the model, {theirs!r} in the CRD")
    return found


def model_default(default: Any) -> Any:
    if isinstance(default, BaseModel):
        return default.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(default, tuple | list):
        return [model_default(item) for item in default]
    return default


def contract_differences(schema: dict[str, Any], spec: type[BaseModel] = EvalSpec) -> list[str]:
    properties = schema["properties"]
    return model_differences(spec, properties["spec"], "spec") + model_differences(
        EvalStatus, properties["status"], "status"
    )


def test_the_models_and_the_crd_agree_field_by_field() -> None:
    assert contract_differences(crd_schema()) == []


def test_a_field_only_in_the_crd_is_found() -> None:
    schema = crd_schema()
    model = schema["properties"]["spec"]["properties"]["model"]
    model["properties"]["pricePerMillionTokens"] = {"type": "number", "minimum": 0}
    assert contract_differences(schema) == ["spec.model.pricePerMillionTokens: in the CRD only"]


def test_a_field_only_in_the_model_is_found() -> None:
    priced = create_model(
        "PricedModelSpec", __base__=ModelSpec, price_per_million_tokens=(float | None, None)
    )
    spec = create_model("PricedEvalSpec", __base__=EvalSpec, model=(priced, ...))
    assert contract_differences(crd_schema(), spec) == ["spec.model.pricePerMillionTokens: in the model only"]


def test_a_changed_default_enum_type_or_requirement_is_found() -> None:
    schema = crd_schema()
    spec = schema["properties"]["spec"]
    spec["properties"]["trials"]["default"] = 11
    spec["properties"]["model"]["properties"]["scaffold"]["enum"].append("plan-and-act")
    spec["properties"]["maxSteps"]["type"] = "number"
    spec["required"].append("trials")
    spec["properties"]["scoring"]["properties"]["nReq"]["properties"]["rule"]["default"] = "fixed"
    assert contract_differences(schema) == [
        "spec.maxSteps: <class 'int'> in the model, type number in the CRD",
        "spec.model.scaffold: enum ['five-step', 'react', 'tools'] in the model, "
        "['five-step', 'react', 'tools', 'plan-and-act'] in the CRD",
        "spec.scoring.nReq.rule: default 'scenario' in the model, 'fixed' in the CRD",
        "spec.scoring.nReq: default {'rule': 'scenario'} in the model, {'rule': 'fixed'} in the CRD",
        "spec.scoring: default {'nReq': {'rule': 'scenario'}, 'alpha': 0.5, 'beta': 0.5, 'replicaCost': 1.0} "
        "in the model, {'nReq': {'rule': 'fixed'}, 'alpha': 0.5, 'beta': 0.5, 'replicaCost': 1} in the CRD",
        "spec.trials: required on one side only",
        "spec.trials: default 10 in the model, 11 in the CRD",
    ]


def test_every_scenario_the_api_names_is_registered() -> None:
    assert sorted(scenarios.SCENARIOS) == sorted(SCENARIO_NAMES)


def test_the_defaults_the_api_server_applies_are_the_models() -> None:
    """A minimal spec, defaulted by the CRD's rules, reads back as the model's defaults."""
    minimal = {"scenario": {"name": "load-balancing"}, "model": {"provider": "local"}}
    stored = with_defaults(crd_schema()["properties"]["spec"], minimal)
    spec = EvalSpec.model_validate(stored)
    assert spec == EvalSpec.model_validate(minimal)
    assert spec.to_api() == stored
