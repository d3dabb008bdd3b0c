"""The OpenAPI entries of the staff page's routes (`api.page`), kept beside the page.

`api.openapi.document` adds them to the API's paths, so that `/openapi.json` lists every route
the app serves and the schemathesis tests hold these to what they answer too.
"""

from __future__ import annotations

from typing import Any

from api.schemas import ID_PATTERN

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


PAGE_PATHS: dict[str, Any] = {
    "/": {
        "get": {
            "summary": "The box's web page for venue staff (HTML)",
            "description": "Bookings, health, camera stills and recent videos; the same data "
            "as `/status` and `/bookings`. Changes go through the API's routes with the token.",
            "operationId": "page",
            "responses": {
                "200": {
                    "description": "The page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/page/live": {
        "get": {
            "summary": "The page's live parts, rendered again (HTML strings in JSON)",
            "description": "What the page polls. With the token, videos come with links "
            "that play them.",
            "operationId": "pageLive",
            "responses": {
                "200": {
                    "description": "One HTML fragment per part, and the time they show.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["bookings", "health", "videos", "time", "token"],
                                "properties": {
                                    "bookings": {"type": "string"},
                                    "health": {"type": "string"},
                                    "videos": {"type": "string"},
                                    "time": {"type": "string"},
                                    "token": {
                                        "type": "string",
                                        "enum": ["accepted", "wrong", "none", "not_needed"],
                                        "description": "What the box made of the bearer "
                                        "token sent with this request.",
                                    },
                                },
                            }
                        }
                    },
                }
            },
        }
    },
    "/bookings/{id}/video.mp4": {
        "get": {
            "summary": "A finished video from the box's own copy, through a signed link",
            "description": "The link (`exp`, `sig`) is handed out by `/page/live` to a "
            "request with the token; Range requests are honoured.",
            "operationId": "video",
            "parameters": [
                {"name": "id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": ID_PATTERN}},
                {"name": "exp", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The video.",
                    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
                },
                "206": {
                    "description": "The range asked for.",
                    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
                },
                "403": _error("The link is wrong or has expired."),
                "404": _error("No such booking, or its file is gone from the box."),
                "416": _error("The range asked for is outside the file."),
            },
        }
    },
}
