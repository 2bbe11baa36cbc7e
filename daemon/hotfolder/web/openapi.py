"""The OpenAPI description of the console's API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from hotfolder import __version__
from hotfolder.config import Config
from hotfolder.web.console import STATES

ERROR = {"$ref": "#/components/schemas/Error"}
JOB = {"$ref": "#/components/schemas/Job"}


def answer(status: str, what: str, schema: dict[str, Any] | None = None,
           media: str = "application/json") -> dict[str, Any]:
    """One response of an operation."""
    body: dict[str, Any] = {"description": what}
    if schema is not None:
        body["content"] = {media: {"schema": schema}}
    return {status: body}


def errors(*statuses: str) -> dict[str, Any]:
    """The error responses of an operation, each a JSON {"error": words}."""
    return {status: {"description": "refused, the reason in plain words",
                     "content": {"application/json": {"schema": ERROR}}}
            for status in statuses}


def operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, **errors("401", "403")}, **extra}


def query(name: str, what: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": what,
            "schema": schema}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def description(cfg: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API, with this service's limits."""
    text = {"type": "string"}
    nullable = {"type": ["string", "null"]}
    job_schema = {"type": "object", "properties": {
        "id": text, "name": text, "folder": text,
        "state": {"type": "string", "enum": list(STATES)}, "reason": nullable,
        "created": text, "started": nullable, "updated": text}}
    paths: dict[str, Any] = {
        "/api/v1/session": {"post": operation(
            "Trade the token for an HttpOnly, SameSite=Strict session cookie",
            {**answer("204", "the cookie is set"), **errors("400")},
            requestBody={"content": {"application/json": {"schema": {
                "type": "object", "properties": {"token": text}}}}})},
        "/api/v1/folders": {"get": operation("Inbox folders that take uploads", answer(
            "200", "the folders", {"type": "array", "items": {"type": "object", "properties": {
                "path": text, "recipe": text, "description": text,
                "steps": {"type": "array", "items": text}}}}))},
        "/api/v1/uploads": {"post": operation(
            f"Upload 1 to {cfg.web.max_files} files of at most {cfg.limits.max_file_mb:g} MB"
            " into a folder, as if dropped there",
            {**answer("202", "claimed; the jobs", {"type": "array", "items": JOB}),
             **errors("400", "409", "413")},
            requestBody={"content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["files", "folder"], "properties": {
                    "folder": text,
                    "files": {"type": "array", "items": {"type": "string",
                                                         "format": "binary"}}}}}}})},
        "/api/v1/jobs": {"get": operation("Jobs, newest first", {
            **answer("200", "the jobs", {"type": "array", "items": JOB}), **errors("400")},
            parameters=[query("state", "only jobs in this state",
                              {"type": "string", "enum": list(STATES)}),
                        query("folder", "only jobs of this folder", text),
                        query("q", "only jobs whose name contains this", text),
                        query("limit", "at most this many", {"type": "integer"}),
                        query("before", "only jobs created before this time (epoch seconds"
                              " or ISO 8601, as `created` gives it)", text)])},
        "/api/v1/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": operation("One job, with its steps, outputs, sidecar or report", {
                **answer("200", "the job", {"type": "object"}), **errors("404")}),
            "delete": operation(
                "Remove its outputs, sidecar, and archived original or failed entry", {
                    **answer("204", "removed"), **errors("404", "409")},
                parameters=[query("quarantine", "yes: also a quarantined file",
                                  {"type": "string", "enum": ["yes"]})])},
        "/api/v1/jobs/{job_id}/download": {"parameters": [JOB_ID], "get": operation(
            "The main output (or output N) as an attachment",
            {**answer("200", "the file", {"type": "string", "format": "binary"},
                      "application/octet-stream"), **errors("404", "409")},
            parameters=[query("output", "which output, from 0", {"type": "integer"})])},
        "/api/v1/jobs/{job_id}/preview": {"parameters": [JOB_ID], "get": operation(
            "A small image made from the decoded pixels", {
                **answer("200", "PNG or JPEG", {"type": "string", "format": "binary"},
                         "image/*"), **errors("400", "404")},
            parameters=[query("side", "before or after", {"type": "string",
                                                          "enum": ["before", "after"]})])},
        "/api/v1/jobs/{job_id}/retry": {"parameters": [JOB_ID], "post": operation(
            "A failed job back into its folder, as hotfolder retry", {
                **answer("202", "the new job", JOB), **errors("404", "409")})},
        "/api/v1/jobs/{job_id}/process": {"parameters": [JOB_ID], "post": operation(
            "The archived original again, in another folder or with other steps", {
                **answer("202", "the new job", JOB), **errors("400", "404", "409")},
            requestBody={"content": {"application/json": {"schema": {
                "type": "object", "properties": {"folder": text, "steps": text}}}}})},
        "/api/v1/events": {"get": operation(
            "Server-sent events: a job event with the list fields at each change of state",
            answer("200", "the stream", text, "text/event-stream"))},
        "/api/v1/openapi.json": {"get": operation("This description",
                                                  answer("200", "OpenAPI 3.1"))},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "hotfolder console", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Job": job_schema, "Error": {
                "type": "object", "required": ["error"], "properties": {"error": text}}},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"},
                                "session": {"type": "apiKey", "in": "cookie",
                                            "name": "hotfolder_session"}},
        },
        "security": [{"token": []}, {"session": []}, {}],
    }
