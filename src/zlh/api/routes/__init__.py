"""HTTP routes of the API, one module per resource."""

from zlh.schemas import ErrorBody

# Documented on every route so OpenAPI (and schemathesis) know the error envelope.
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 422, 429, 502, 503)
}
