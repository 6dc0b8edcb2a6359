from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView


class ApiRootView(APIView):
    """Where to start: the schema, its docs, and who you are."""

    permission_classes = [AllowAny]
    schema = None  # an index of links, not part of the API contract

    def get(self, request):
        return Response(
            {
                "schema": reverse("api-schema", request=request),
                "docs": reverse("api-docs", request=request),
                "me": reverse("api-me", request=request),
                "token": reverse("api-token", request=request),
            }
        )
