"""One error shape for the whole API: {"error": {"code", "message", "fields"}}."""

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.utils.translation import gettext
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.authentication import TokenAuthentication
from rest_framework.views import exception_handler as drf_exception_handler


def _first_message(detail):
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else ""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        message = _first_message(value)
        return message if key == "non_field_errors" else f"{key}: {message}"
    return str(detail)


def _sent_a_token(request):
    scheme = request.META.get("HTTP_AUTHORIZATION", "").split(maxsplit=1)
    return bool(scheme) and scheme[0].lower() == TokenAuthentication.keyword.lower()


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.AuthenticationFailed) and _sent_a_token(context["request"]):
        # DRF answers 403 when session authentication comes first; a token client must be told to re-authenticate.
        response.status_code = status.HTTP_401_UNAUTHORIZED
        response["WWW-Authenticate"] = TokenAuthentication.keyword
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    error = {
        "code": codes if isinstance(codes, str) else "invalid",
        "message": _first_message(detail),
    }
    if isinstance(detail, dict):
        error["fields"] = detail
    response.data = {"error": error}
    return response


def is_api_request(request):
    return request.path.startswith("/api/")


def api_not_found_as_json(get_response):
    """Middleware: a path under /api/ that no route matches answers in the API's shape, not an HTML page; with
    DEBUG on too, where Django would answer with its page listing the URL patterns. It sits outside
    CommonMiddleware, so a path missing its slash is still redirected first."""

    def middleware(request):
        response = get_response(request)
        if response.status_code == 404 and is_api_request(request) and not response.get("Content-Type", "").startswith("application/json"):
            # DRF's own sentence, so DRF's catalogue translates it as it does for its 404s.
            return JsonResponse({"error": {"code": "not_found", "message": gettext("Not found.")}}, status=404)
        return response

    return middleware


def server_error(request):
    """handler500: the API's clients get JSON here too (the traceback goes to the log, never to them)."""
    if is_api_request(request):
        return JsonResponse({"error": {"code": "error", "message": gettext("A server error occurred.")}}, status=500)
    return defaults.server_error(request)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable: not_found, invalid, duplicate, ..."},
                "message": {"type": "string", "description": "One sentence for a person."},
                "fields": {"type": "object", "description": "Per-field messages, for a refused request body."},
            },
        }
    },
}


def document_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation names the error answers it can give, in their one shape.

    404 where the path or a page names something or a permission answers 404 (the style-training API), 400
    where a write can be refused, 401/403 where sign-in is required; a view's own description of one of these
    codes is kept.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    answer = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    reasons = {
        "400": "Refused: the message says why; nothing was changed.",
        "401": "The token sent was not accepted (token authentication): unknown, revoked, or of an inactive account.",
        "403": "Not signed in, or not allowed.",
        "404": "No such object among yours, or no such page.",
    }
    answers_not_found = {
        (path, method.lower())
        for path, _regex, method, view in generator.endpoints
        if any(getattr(permission, "not_found", False) for permission in view.cls.permission_classes)
    }
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            codes = set()
            if "{" in path or any(p["name"] == "page" for p in operation.get("parameters", [])):
                codes.add("404")
            if (path, method) in answers_not_found:
                codes.add("404")
            if method in ("post", "put", "patch"):
                codes.add("400")
            if {} not in operation.get("security", [{}]):
                codes |= {"401", "403"}
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(code, {"description": reasons[code]})
            for code, described in responses.items():
                if code.startswith(("4", "5")):
                    described.setdefault("content", answer["content"])
    return result
