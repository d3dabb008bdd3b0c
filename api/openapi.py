"""The OpenAPI 3.1 document served at `/openapi.json`, generated from the app's routes.

Each endpoint declares what it reads and answers with `@operation(...)`: its request body, query
and answers are the pydantic models the endpoint validates with or serialises through (the
booking's own is `controller.fsm.views`), so no field is written twice. `document(routes)`
walks the Starlette routes (one method per function, or the methods of an `HTTPEndpoint`) and
turns the declarations into operations; the models become `components/schemas` through one
`TypeAdapter.json_schemas` call, so a model used by several routes is described once.

Why not a library: Starlette's `SchemaGenerator` reads YAML from docstrings (the schemas would be
hand-written again); spectree and the like validate requests themselves, replacing the body cap,
the 415 check and the `{"error", "detail"}` answers of `api.schemas` / `api.errors`.
The bearer requirement follows `api.auth`: mutating methods need the token when one is set,
and so does any operation declared `token=True`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema
from starlette.endpoints import HTTPEndpoint
from starlette.routing import BaseRoute, Route

from api.auth import MUTATING
from api.errors import ERROR_TEXT, ErrorBody
from api.schemas import MAX_BODY_BYTES, PATH_PARAMETERS

JSON = "application/json"
REF = "#/components/schemas/{model}"
METHODS = ("get", "post", "put", "patch", "delete")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Answer:
    """One documented answer: a JSON body of `model` (a model or a type such as list[Model]),
    or a body of `media_type` (`model` None: a string, binary unless the type is text)."""

    description: str
    model: Any = None
    media_type: str = JSON
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> schema


@dataclass(frozen=True)
class Operation:
    id: str
    summary: str
    answers: dict[int, Answer]
    description: str = ""
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()  # statuses answered with the JSON error body
    token: bool = False  # needs the token even though the method only reads
    public: bool = False  # never needs the token (monitoring without a secret)


def operation(**spec: Any) -> Callable[[F], F]:
    """Declare an endpoint's OpenAPI operation (the keywords of `Operation`)."""
    op = Operation(**spec)

    def declare(endpoint: F) -> F:
        endpoint.openapi = op  # type: ignore[attr-defined]
        return endpoint

    return declare


def operations(route: Route) -> Iterable[tuple[str, Operation]]:
    """(method, operation) for every method the route serves, HEAD aside."""
    endpoint = route.endpoint
    if inspect.isclass(endpoint) and issubclass(endpoint, HTTPEndpoint):
        handlers = [(m, getattr(endpoint, m)) for m in METHODS if hasattr(endpoint, m)]
    else:
        handlers = [(m.lower(), endpoint) for m in sorted(route.methods or ()) if m != "HEAD"]
    for method, handler in handlers:
        op = getattr(handler, "openapi", None)
        if op is None:
            raise TypeError(f"{method.upper()} {route.path} has no @operation")
        yield method, op


def _allows_null(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    return (
        kinds == "null"
        or (isinstance(kinds, list) and "null" in kinds)
        or any(_allows_null(alt) for alt in schema.get("anyOf", ()))
    )


class _Generate(GenerateJsonSchema):
    """Pydantic's JSON Schema, less `"default": null` where null is not accepted (a field left
    out means "none", which `SkipJsonSchema[None]` keeps out of the schema)."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default", False) is None and not _allows_null(json_schema):
            del json_schema["default"]
        return json_schema


class _Schemas:
    """Collects every type to describe, then describes them all in one pass (one set of
    definitions, so a model several routes use is one component)."""

    def __init__(self) -> None:
        self.inputs: list[tuple[int, JsonSchemaMode, TypeAdapter[Any]]] = []
        self.found: dict[tuple[int, JsonSchemaMode], JsonSchemaValue] = {}
        self.components: dict[str, Any] = {}

    def add(self, annotation: Any, mode: JsonSchemaMode) -> tuple[int, JsonSchemaMode]:
        key = (len(self.inputs), mode)
        self.inputs.append((key[0], mode, TypeAdapter(annotation)))
        return key

    def resolve(self) -> None:
        self.found, defs = TypeAdapter.json_schemas(
            self.inputs, ref_template=REF, schema_generator=_Generate
        )
        self.components = dict(defs.get("$defs", {}))

    def __getitem__(self, key: tuple[int, JsonSchemaMode]) -> dict[str, Any]:
        return dict(self.found[key])


@dataclass(frozen=True)
class _Planned:
    path: str
    method: str
    op: Operation
    body: tuple[int, JsonSchemaMode] | None
    answers: dict[int, tuple[int, JsonSchemaMode]]


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _plain(media_type: str) -> dict[str, Any]:
    if media_type.startswith("text/"):
        return {"type": "string"}
    return {"type": "string", "format": "binary"}


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        params.append(param | {"schema": prop})
    return params


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]
    return [
        {"name": n, "in": "path", "required": True,
         "schema": TypeAdapter(PATH_PARAMETERS[n]).json_schema()}
        for n in names
    ]  # fmt: skip


def _plan(routes: Iterable[BaseRoute], schemas: _Schemas) -> list[_Planned]:
    planned = []
    for route in routes:
        if not isinstance(route, Route):
            continue  # the static files' Mount: not an API
        path = route.path.replace(":int}", "}")
        for method, op in operations(route):
            if op.query:
                schemas.add(op.query, "validation")  # for its definition, spelled out below
            planned.append(
                _Planned(
                    path,
                    method,
                    op,
                    schemas.add(op.body, "validation") if op.body else None,
                    {
                        status: schemas.add(answer.model, "serialization")
                        for status, answer in op.answers.items()
                        if answer.model is not None
                    },
                )
            )
    return planned


def _responses(plan: _Planned, schemas: _Schemas, errors: list[int]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in plan.op.answers.items():
        key = plan.answers.get(status)
        schema = schemas[key] if key else _plain(answer.media_type)
        responses[str(status)] = {
            "description": answer.description,
            **({"headers": {k: {"schema": v} for k, v in answer.headers.items()}}
               if answer.headers else {}),
            "content": _content(answer.media_type, schema),
        }  # fmt: skip
    for status in errors:
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    return responses


def _error_responses(statuses: Iterable[int], error: dict[str, Any]) -> dict[str, Any]:
    responses = {
        f"E{status}": {
            "description": ERROR_TEXT[status].format(max_body=MAX_BODY_BYTES),
            "content": _content(JSON, error),
        }
        for status in sorted(statuses)
    }
    if "E401" in responses:
        responses["E401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return responses


def document(routes: Iterable[BaseRoute], *, token_required: bool) -> dict[str, Any]:
    """The document of `routes`; the bearer requirement is listed when a token is set."""
    schemas = _Schemas()
    planned = _plan(routes, schemas)
    error_key = schemas.add(ErrorBody, "serialization")
    schemas.resolve()
    # A query model is spelled out as parameters, not kept as a schema of its own.
    queries = {
        plan.op.query: schemas.components.pop(plan.op.query.__name__)
        for plan in planned
        if plan.op.query and plan.op.query.__name__ in schemas.components
    }
    paths: dict[str, Any] = {}
    used_errors: set[int] = set()
    for plan in planned:
        op = plan.op
        secured = token_required and not op.public and (op.token or plan.method.upper() in MUTATING)
        item: dict[str, Any] = {"summary": op.summary, "operationId": op.id}
        if op.description:
            item["description"] = op.description
        params = _path_parameters(plan.path)
        if op.query:
            params += _query_parameters(queries[op.query])
        if params:
            item["parameters"] = params
        if op.public or secured:
            item["security"] = [{"bearer": []}] if secured else []
        if plan.body is not None:
            item["requestBody"] = {
                "required": op.body_required,
                "content": _content(JSON, schemas[plan.body]),
            }
        errors = sorted({*op.errors, *((401,) if secured else ())})
        used_errors.update(errors)
        item["responses"] = _responses(plan, schemas, errors)
        paths.setdefault(plan.path, {})[plan.method] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "EZREC controller API",
            "version": "1",
            "description": "Bookings, health and cameras of one EZREC recording box. Errors "
            "are JSON `{\"error\": code, \"detail\": text}`. Mutating routes need "
            "`Authorization: Bearer <EZREC_API_TOKEN>` when a token is configured.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "responses": _error_responses(used_errors, schemas[error_key]),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
