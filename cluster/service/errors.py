"""The service's error answers: JSON ``{"error": CODE, "message": TEXT, "field": PATH | null}``, never a traceback.

Also the translation of pydantic's validation errors into one line naming the offending field, such as
``headlines[3].text``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .models import CollapseItem, ErrorBody

__all__ = ["ApiError", "error", "error_body", "field_path", "validation_response"]


class ApiError(Exception):
    """Raised by a route to answer with an error JSON (the app's handler turns it into the response)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return ErrorBody(error=code, message=message, field=field).model_dump()


def error(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


# Pydantic tags an error inside a ``str | CollapseItem`` union with the branch it tried: the model's name,
# or for the string branch a description of its validators such as "function-after[_visible(), ...]".
def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (part in ("str", CollapseItem.__name__) or _is_string_branch(part))


def _is_string_branch(part: object) -> bool:
    return isinstance(part, str) and (part == "str" or part.startswith(("function-", "constrained-str")))


def field_path(loc: Sequence[Any]) -> tuple[str, bool]:
    """('body', 'headlines', 3, 'text') -> 'headlines[3].text', and whether it went through a union branch.

    Pydantic names the member of a ``str | CollapseItem`` union it tried ('str', 'CollapseItem'): such a
    tag is not a field, so it is dropped from the path.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    branch = False
    for position, part in enumerate(parts):
        if isinstance(part, int):
            path += f"[{part}]"
        elif position > 0 and isinstance(parts[position - 1], int) and _is_union_tag(part):
            branch = True
        else:
            path += f".{part}" if path else str(part)
    return path or "body", branch


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """One 422 line for a request pydantic refused: the first offending field, and how many others."""
    errors = list(exc.errors()) or [{"loc": ("body",), "msg": "invalid request", "type": ""}]
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        where = first["loc"][1] if len(first["loc"]) > 1 else "?"
        return error(422, "invalid_json", f"the body is not valid JSON: {reason} at character {where}", "body")
    # A headline that is neither a string nor a valid object fails both union branches: keep the errors of
    # the branch the client meant (an object -> its fields; anything else -> "not a string or object").
    described: list[tuple[str, str]] = []
    for item in errors:
        field, branch = field_path(item["loc"])
        is_object = isinstance(item.get("input"), Mapping) or field.count(".") > 0
        if branch and _is_string_branch(item["loc"][-1]):
            if isinstance(item.get("input"), Mapping):
                continue  # the client sent an object: its own field errors say what is wrong
            if isinstance(item.get("input"), str):  # a string, refused for what it holds
                message = _plain(item["msg"])
            else:
                message = "must be a string or an object with a text field"
        elif branch and not is_object:
            continue  # the object branch's complaint about a non-object adds nothing to the line above
        elif item.get("type") == "extra_forbidden":
            message = "unknown field (check its spelling)"
        elif field == "body" and item.get("type") in ("model_attributes_type", "dict_type"):
            message = "send a JSON object with Content-Type: application/json"
        else:
            message = _plain(item["msg"])
        if (field, message) not in described:
            described.append((field, message))
    # An unknown field goes first: a misspelt "headline" is the cause, "headlines: Field required" the effect.
    described.sort(key=lambda item: not item[1].startswith("unknown field"))
    field, message = described[0] if described else ("body", "invalid request")
    if message.startswith("unknown field"):
        # A required field missing beside it, at the same level and spelt alike, is what the client meant.
        parent, _, leaf = field.rpartition(".")
        missing = [field_path(item["loc"])[0] for item in errors if item.get("type") == "missing"]
        siblings = [m.rpartition(".")[2] for m in missing if m.rpartition(".")[0] == parent]
        close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
        if close:
            message = f"unknown field; did you mean {close[0]!r}?"
    others = len({f for f, _ in described} - {field})
    suffix = f" (and {others} other field{'s' if others > 1 else ''})" if others else ""
    return error(422, "invalid_request", f"{field}: {message}{suffix}", field)


def _plain(message: str) -> str:
    # Pydantic prefixes the messages of custom validators with their kind; the client needs the reason.
    return message.removeprefix("Value error, ")
