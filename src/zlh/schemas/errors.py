"""The one error envelope every HTTP error uses: ``{message, detail, validations}``."""

from __future__ import annotations

from pydantic import ValidationError

from zlh.schemas._base import WireModel

__all__ = ["ErrorBody", "FieldProblem", "validation_problems"]


class FieldProblem(WireModel):
    field: str
    detail: str


class ErrorBody(WireModel):
    message: str
    detail: str = ""
    validations: list[FieldProblem] = []
    # The container's state when that is what refused the request (e.g. "stopped"); left out
    # of the JSON otherwise (dumped with exclude_none).
    state: str | None = None


def validation_problems(exc: ValidationError) -> list[FieldProblem]:
    """Each pydantic error as ``field: detail``, the field a dotted wire path (``runtime.name``)."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "(body)"
        problems.append(FieldProblem(field=field, detail=error["msg"]))
    return problems
