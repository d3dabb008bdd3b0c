"""The OpenAPI entries of the replay routes (`api.marks`, `api.share`), kept beside them.

`api.openapi.document` adds them, so `/openapi.json` lists every route the app serves and the
schemathesis tests hold these to what they answer too.
"""

from __future__ import annotations

from typing import Any

from api.schemas import ID_PATTERN, TIME_PATTERN

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


ID = {"name": "id", "in": "path", "required": True,
      "schema": {"type": "string", "pattern": ID_PATTERN}}  # fmt: skip
CAMERA = {"name": "camera", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": ID_PATTERN}}  # fmt: skip
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "MarkIn": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "at": {"type": ["string", "null"], "pattern": TIME_PATTERN,
                   "description": "ISO 8601 with a UTC offset; default now"},
        },
    },
    "Mark": {
        "type": "object",
        "required": ["id", "at", "source"],
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "source": {"type": "string", "enum": ["button", "api", "cli"]},
        },
    },
    "MarkResult": {
        "type": "object",
        "required": ["booking_id", "mark", "duplicate"],
        "properties": {
            "booking_id": {"type": "string"},
            "mark": _ref("Mark"),
            "duplicate": {"type": "boolean",
                          "description": "a stored mark within 3 s stands for this one"},
        },
    },
    "Share": {
        "type": "object",
        "required": ["booking_id", "expires_at", "revoked_at", "links"],
        "properties": {
            "booking_id": {"type": "string"},
            "expires_at": NULLABLE_TIME,
            "revoked_at": NULLABLE_TIME,
            "links": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "kind", "url", "expires_at"],
                    "properties": {
                        "name": {"type": "string", "examples": ["video", "clip01"]},
                        "kind": {"type": "string", "enum": ["video", "clip"]},
                        "url": {"type": "string"},
                        "expires_at": NULLABLE_TIME,
                    },
                },
            },
        },
    },
}


def paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    write = {"security": secured} if secured else {}
    w401 = (401,) if secured else ()
    mark_body = {"required": False, "content": {JSON: {"schema": _ref("MarkIn")}}}
    marked = {
        "200": _json(_ref("MarkResult"), "A mark within a few seconds was there already."),
        "201": _json(_ref("MarkResult"), "Stored."),
    }
    return {
        "/cameras/{camera}/mark": {
            "post": {
                "summary": "A replay mark on the booking recording on this camera now",
                "description": "409 when nothing records there.",
                "operationId": "markCamera",
                "parameters": [CAMERA],
                **write,
                "requestBody": mark_body,
                "responses": {**marked, **_errors(*w401, 404, 409, 413, 415, 422)},
            }
        },
        "/bookings/{id}/marks": {
            "parameters": [ID],
            "get": {
                "summary": "The booking's replay marks",
                "operationId": "listMarks",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Mark")}, "Marks, in order."),
                    **_errors(404),
                },
            },
            "post": {
                "summary": "A replay mark on this booking, now or at `at`",
                "description": "409 unless the booking is recording and `at` inside its slot.",
                "operationId": "markBooking",
                **write,
                "requestBody": mark_body,
                "responses": {**marked, **_errors(*w401, 404, 409, 413, 415, 422)},
            },
        },
        "/bookings/{id}/share": {
            "parameters": [ID],
            "get": {
                "summary": "The booking's share links (capabilities: token needed)",
                "operationId": "getShare",
                **write,
                "responses": {"200": _json(_ref("Share"), "Links."), **_errors(*w401, 404)},
            },
            "post": {
                "summary": "Make share links for the stored video and clips (if none are live)",
                "operationId": "makeShare",
                **write,
                "requestBody": {"required": False, "content": {JSON: {"schema": {
                    "type": "object", "maxProperties": 0}}}},
                "responses": {
                    "200": _json(_ref("Share"), "Live links."),
                    **_errors(*w401, 404, 409, 413, 415, 422, 503),
                },
            },
            "delete": {
                "summary": "Revoke the share links (they stop working at once)",
                "operationId": "revokeShare",
                **write,
                "responses": {
                    "200": _json(_ref("Share"), "Revoked."),
                    **_errors(*w401, 404, 409, 503),
                },
            },
        },
        "/bookings/{id}/qr.png": {
            "get": {
                "summary": "A QR code of the video's share link (token needed)",
                "operationId": "shareQr",
                "parameters": [
                    ID,
                    {"name": "clip", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
                     "description": "a clip's name (clip01) instead of the video"},
                ],
                **write,
                "responses": {
                    "200": {"description": "A PNG image.",
                            "content": {"image/png": {"schema": {"type": "string",
                                                                 "format": "binary"}}}},
                    **_errors(*w401, 404, 409, 422),
                },
            }
        },
    }
