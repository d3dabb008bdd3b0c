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
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
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
    """Collects every type to describe, then describes them all in one pass."""

    def __init__(self) -> None:
        self.inputs: list[tuple[Any, Any, TypeAdapter[Any]]] = []
        self.schemas: dict[Any, Any] = {}

    def add(self, kind: Any, mode: str) -> tuple[int, str]:
        key = (len(self.inputs), mode)
        self.inputs.append((key[0], mode, TypeAdapter(kind)))
        return key

    def resolve(self) -> dict[str, Any]:
        found, defs = TypeAdapter.json_schemas(
            self.inputs, ref_template=REF, schema_generator=_Generate
        )
        self.schemas = found
        return defs.get("$defs", {})

    def __getitem__(self, key: tuple[int, str]) -> dict[str, Any]:
        return dict(self.schemas[key])


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


def document(routes: Iterable[BaseRoute], *, token_required: bool) -> dict[str, Any]:
    """The document of `routes`; the bearer requirement is listed when a token is set."""
    schemas = _Schemas()
    planned: list[tuple[str, str, Operation, dict[str, Any]]] = []
    for route in routes:
        if not isinstance(route, Route):
            continue  # the static files' Mount: not an API
        path = route.path.replace(":int}", "}")
        for method, op in operations(route):
            keys = {
                "body": schemas.add(op.body, "validation") if op.body else None,
                "query": schemas.add(op.query, "validation") if op.query else None,
                "answers": {
                    status: schemas.add(answer.model, "serialization")
                    for status, answer in op.answers.items()
                    if answer.model is not None
                },
            }
            planned.append((path, method, op, keys))
    error_key = schemas.add(ErrorBody, "serialization")
    components = schemas.resolve()
    # A query model is spelled out as parameters, not kept as a schema of its own.
    queries = {
        op.query: components.pop(op.query.__name__)
        for _, _, op, _ in planned
        if op.query and op.query.__name__ in components
    }

    paths: dict[str, Any] = {}
    used_errors: set[int] = set()
    for path, method, op, keys in planned:
        secured = token_required and not op.public and (op.token or method.upper() in MUTATING)
        item: dict[str, Any] = {"summary": op.summary, "operationId": op.id}
        if op.description:
            item["description"] = op.description
        params = _path_parameters(path) + (
            _query_parameters(queries[op.query]) if op.query else []
        )
        if params:
            item["parameters"] = params
        if op.public:
            item["security"] = []
        elif secured:
            item["security"] = [{"bearer": []}]
        if keys["body"] is not None:
            item["requestBody"] = {
                "required": op.body_required,
                "content": _content(JSON, schemas[keys["body"]]),
            }
        responses: dict[str, Any] = {}
        for status, answer in op.answers.items():
            schema = (
                schemas[keys["answers"][status]]
                if answer.model is not None
                else _plain(answer.media_type)
            )
            responses[str(status)] = {
                "description": answer.description,
                **({"headers": {k: {"schema": v} for k, v in answer.headers.items()}}
                   if answer.headers else {}),
                "content": _content(answer.media_type, schema),
            }  # fmt: skip
        errors = sorted({*op.errors, *((401,) if secured else ())})
        for status in errors:
            responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
        used_errors.update(errors)
        item["responses"] = responses
        paths.setdefault(path, {})[method] = item

    error = _content(JSON, schemas[error_key])
    responses = {
        f"E{status}": {
            "description": ERROR_TEXT[status].format(max_body=MAX_BODY_BYTES),
            "content": error,
        }
        for status in sorted(used_errors)
    }
    if "E401" in responses:
        responses["E401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
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
            "schemas": components,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
