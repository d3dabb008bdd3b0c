"""The OpenAPI 3.1 document served at `/openapi.json`, written by hand.

By hand because the request schemas must say exactly what `api.schemas` accepts (the same
patterns are imported from there) and every status a route can answer must be listed: the
schemathesis tests hold the server to this document, and clients generate code from it.
"""

from __future__ import annotations

from typing import Any

from api import replays_openapi
from api.page_openapi import PAGE_PATHS
from api.schemas import (
    DEFAULT_LIST,
    EMAIL_PATTERN,
    ID_PATTERN,
    MAX_BODY_BYTES,
    MAX_LIST,
    TIME_PATTERN,
    URL_PATTERN,
    USER_PATTERN,
)
from controller.fsm import STATES, TRIGGERS

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


NULLABLE_STRING = {"type": ["string", "null"]}
TIME = {
    "type": "string",
    "pattern": TIME_PATTERN,
    "description": "ISO 8601 with a UTC offset (naive times are refused), e.g. "
    "2026-11-23T18:00:00+01:00",
    "examples": ["2026-11-23T18:00:00+01:00"],
}
URL = {"type": "string", "maxLength": 2048, "pattern": URL_PATTERN}

_ERROR_TEXT = {
    401: "Missing or wrong bearer token (only when EZREC_API_TOKEN is set).",
    404: "No such booking or camera.",
    409: "Overlap with a live booking on the same camera (`conflicts_with` names it), a "
    "transition the booking's state does not allow, or a stale `expected_version`.",
    413: f"The body is over {MAX_BODY_BYTES} bytes.",
    415: "The body is not application/json.",
    422: "Invalid input: `detail` says which field and why.",
    503: "No camera still or camera list can be had now.",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "short stable code"},
            "detail": {"type": "string", "description": "for people"},
            "conflicts_with": {"type": "string"},
            "state": {"type": "string"},
            "version": {"type": ["integer", "null"]},
        },
    },
    "Booking": {
        "type": "object",
        "required": [
            "id", "user_id", "camera_id", "device_id", "start_time", "end_time", "state",
            "version", "attempts", "next_attempt_at", "last_error", "raw_dir",
            "processed_path", "video_url", "progress", "progress_stage", "extra",
            "created_at", "updated_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "user_id": NULLABLE_STRING,
            "camera_id": {"type": "string"},
            "device_id": {"type": "string"},
            "start_time": {"type": "string", "format": "date-time"},
            "end_time": {"type": "string", "format": "date-time"},
            "state": {"type": "string", "enum": list(STATES)},
            "version": {"type": "integer", "minimum": 0},
            "attempts": {"type": "integer", "minimum": 0},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "last_error": NULLABLE_STRING,
            "raw_dir": NULLABLE_STRING,
            "processed_path": NULLABLE_STRING,
            "video_url": NULLABLE_STRING,
            "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "progress_stage": NULLABLE_STRING,
            "extra": {"type": "object"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "Transition": {
        "type": "object",
        "required": ["seq", "from", "to", "trigger", "at", "detail", "error"],
        "properties": {
            "seq": {"type": "integer"},
            "from": {"type": ["string", "null"]},
            "to": {"type": "string", "enum": list(STATES)},
            "trigger": {"type": "string", "enum": list(TRIGGERS)},
            "at": {"type": "string", "format": "date-time"},
            "detail": NULLABLE_STRING,
            "error": NULLABLE_STRING,
        },
    },
    "BookingWithHistory": {
        "allOf": [
            _ref("Booking"),
            {
                "type": "object",
                "required": ["history"],
                "properties": {"history": {"type": "array", "items": _ref("Transition")}},
            },
        ]
    },
    "MediaIn": {
        "type": "object",
        "additionalProperties": False,
        "description": "The booking user's own media (http/https URLs); the venue's settings "
        "fill in what is missing.",
        "properties": {
            "intro": {**URL, "type": ["string", "null"]},
            "logo": {**URL, "type": ["string", "null"]},
            "sponsors": {"type": "array", "maxItems": 3, "items": URL},
        },
    },
    "BookingIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["start_time", "end_time"],
        "properties": {
            "start_time": TIME,
            "end_time": {**TIME, "description": "after start_time, at most EZREC_MAX_BOOKING_H "
                         "later, and not in the past"},
            "id": {"type": ["string", "null"], "pattern": ID_PATTERN,
                   "description": "default: generated"},
            "user_id": {"type": ["string", "null"], "pattern": USER_PATTERN},
            "camera_id": {"type": ["string", "null"], "pattern": ID_PATTERN,
                          "description": "camera / court id; default: this device"},
            "media": {"anyOf": [_ref("MediaIn"), {"type": "null"}]},
            "contact_email": {"type": ["string", "null"], "pattern": EMAIL_PATTERN,
                              "description": "where the player's video links are mailed"},
        },
    },
    "BookingPatch": {
        "type": "object",
        "additionalProperties": False,
        "anyOf": [{"required": ["start_time"]}, {"required": ["end_time"]}],
        "properties": {
            "start_time": TIME,
            "end_time": TIME,
            "expected_version": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "refuse (409) if the booking's version is no longer this",
            },
        },
    },
    "Empty": {
        "type": "object",
        "additionalProperties": False,
        "maxProperties": 0,
    },
    "Camera": {
        "type": "object",
        "required": ["index", "driver", "model", "mode", "up", "detail"],
        "properties": {
            "index": {"type": ["integer", "null"]},
            "driver": NULLABLE_STRING,
            "model": NULLABLE_STRING,
            "mode": {"type": ["string", "null"], "description": "like 1280x720@30"},
            "up": {"type": "boolean"},
            "detail": {"type": "string", "description": "why it is down"},
        },
    },
    "CameraList": {
        "type": "object",
        "required": ["source", "cameras"],
        "properties": {
            "source": {
                "type": "string",
                "enum": ["supervisor", "driver"],
                "description": "the running supervisor's heartbeat, or the driver when it "
                "is not running",
            },
            "cameras": {"type": "array", "items": _ref("Camera")},
        },
    },
    "Status": {
        "type": "object",
        "required": [
            "device_id", "time", "supervisor", "cameras", "disk", "queue", "in_progress",
            "last_errors", "system",
        ],
        "properties": {
            "device_id": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "supervisor": {
                "type": "object",
                "required": ["running", "heartbeat_age_s"],
                "properties": {
                    "running": {"type": "boolean"},
                    "heartbeat_age_s": {"type": ["number", "null"]},
                    "recording": {"type": "array", "items": {"type": "string"}},
                },
            },
            "cameras": {"type": "array", "items": {"type": "object"}},
            "disk": {
                "type": "object",
                "required": ["free_mb", "total_mb", "min_free_mb", "ok"],
                "properties": {
                    "free_mb": {"type": "number"},
                    "total_mb": {"type": "number"},
                    "min_free_mb": {"type": "number"},
                    "ok": {"type": "boolean"},
                },
            },
            "queue": {
                "type": "object",
                "required": list(STATES),
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "in_progress": {"type": "array", "items": {"type": "object"}},
            "last_errors": {"type": "array", "items": {"type": "string"}},
            "system": {"type": "object"},
        },
    },
    "MediaRefresh": {
        "type": "object",
        "required": ["status", "video", "image"],
        "properties": {
            "status": {"type": "string", "enum": ["refreshing"]},
            "video": {"type": "array", "items": {"type": "string"}},
            "image": {"type": "array", "items": {"type": "string"}},
        },
    },
}

ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ID_PATTERN},
}


def _paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    write = {"security": secured} if secured else {}
    w401 = (401,) if secured else ()
    return {
        "/health": {
            "get": {
                "summary": "Liveness (no database access, never needs a token)",
                "operationId": "health",
                "security": [],
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["status"],
                         "properties": {"status": {"type": "string", "enum": ["ok"]}}},
                        "The process answers.",
                    )
                },
            }
        },
        "/status": {
            "get": {
                "summary": "Cameras, disk, bookings per state, supervisor heartbeat age",
                "description": "The same report as `ezrec status --json`; at most 1 s old.",
                "operationId": "status",
                "responses": {"200": _json(_ref("Status"), "The status report.")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document.")},
            }
        },
        "/bookings": {
            "get": {
                "summary": "List bookings, ordered by start time",
                "operationId": "listBookings",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "description": "only these states (repeat the parameter for several)",
                        "style": "form",
                        "explode": True,
                        "schema": {"type": "array",
                                   "items": {"type": "string", "enum": list(STATES)}},
                    },
                    {"name": "from", "in": "query", "description": "slots ending after this",
                     "schema": TIME},
                    {"name": "to", "in": "query", "description": "slots starting before this",
                     "schema": TIME},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST,
                                "default": DEFAULT_LIST}},
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Booking")}, "Bookings."),
                    **_errors(422),
                },
            },
            "post": {
                "summary": "Create a booking",
                "operationId": "createBooking",
                **write,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("BookingIn")}}},
                "responses": {
                    "201": {
                        **_json(_ref("Booking"), "Created."),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_errors(*w401, 409, 413, 415, 422),
                },
            },
        },
        "/bookings/{id}": {
            "parameters": [ID_PARAM],
            "get": {
                "summary": "One booking with its whole transition history",
                "operationId": "getBooking",
                "responses": {
                    "200": _json(_ref("BookingWithHistory"), "The booking."),
                    **_errors(404),
                },
            },
            "patch": {
                "summary": "Reschedule a booking that is still `confirmed`",
                "operationId": "rescheduleBooking",
                **write,
                "requestBody": {
                    "required": True, "content": {JSON: {"schema": _ref("BookingPatch")}}
                },
                "responses": {
                    "200": _json(_ref("Booking"), "Rescheduled."),
                    **_errors(*w401, 404, 409, 413, 415, 422),
                },
            },
            "delete": {
                "summary": "Cancel a booking (409 once its recording has finished)",
                "description": "Cancelling a cancelled booking answers 200 (idempotent).",
                "operationId": "cancelBooking",
                **write,
                "responses": {
                    "200": _json(_ref("Booking"), "Cancelled."),
                    **_errors(*w401, 404, 409),
                },
            },
        },
        "/bookings/{id}/retry": {
            "parameters": [ID_PARAM],
            "post": {
                "summary": "Retry a failed booking now (resets its attempt count)",
                "operationId": "retryBooking",
                **write,
                "requestBody": {"required": False, "content": {JSON: {"schema": _ref("Empty")}}},
                "responses": {
                    "200": _json(_ref("Booking"), "Re-armed."),
                    **_errors(*w401, 404, 409, 413, 415, 422),
                },
            },
        },
        "/media/notify": {
            "post": {
                "summary": "An intro or logo changed: refresh the media cache",
                "description": "Answers at once; the fetching runs after the answer.",
                "operationId": "notifyMedia",
                **write,
                "requestBody": {"required": False, "content": {JSON: {"schema": _ref("Empty")}}},
                "responses": {
                    "202": _json(_ref("MediaRefresh"), "Refresh started."),
                    **_errors(*w401, 413, 415, 422),
                },
            },
        },
        "/cameras": {
            "get": {
                "summary": "Each camera: driver, model, mode, up or down",
                "operationId": "listCameras",
                "responses": {
                    "200": _json(_ref("CameraList"), "Cameras."),
                    **_errors(503),
                },
            }
        },
        "/cameras/{n}/preview.jpg": {
            "get": {
                "summary": "A current still, for aiming the camera (never cached)",
                "description": "Taken from the newest recorded segment while a booking "
                "records (the recording is not touched), else from the camera.",
                "operationId": "cameraPreview",
                "parameters": [
                    {"name": "n", "in": "path", "required": True,
                     "schema": {"type": "integer", "minimum": 0}}
                ],
                "responses": {
                    "200": {
                        "description": "A JPEG image.",
                        "headers": {"Cache-Control": {"schema": {"type": "string",
                                                                  "enum": ["no-store"]}}},
                        "content": {"image/jpeg": {"schema": {"type": "string",
                                                              "format": "binary"}}},
                    },
                    **_errors(404, 503),
                },
            }
        },
    }


def document(token_required: bool) -> dict[str, Any]:
    """The document; mutating operations carry the bearer requirement when a token is set."""
    secured = [{"bearer": []}] if token_required else []
    responses = {
        f"E{status}": _json(_ref("Error"), text) for status, text in _ERROR_TEXT.items()
    }
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
        "paths": _paths(secured) | PAGE_PATHS | replays_openapi.paths(secured),
        "components": {
            "schemas": SCHEMAS | replays_openapi.SCHEMAS,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
