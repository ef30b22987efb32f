"""HTTP routes of the API, one module per resource."""

from zlh.schemas import ErrorBody

# Documented on every route so OpenAPI (and schemathesis) know the error envelope; 400 is a
# body that is not JSON at all (422: JSON that breaks the schema); 502 an agent's refusal and
# 504 an agent that does not answer.
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422, 429, 502, 503, 504)
}
# The workspace's own refusals on top: an upload over the limit, a full disk.
FILE_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    **{code: {"model": ErrorBody} for code in (413, 507)},
}
