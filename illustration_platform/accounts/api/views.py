from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from ..roles import roles_of


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    display_name = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class MeView(APIView):
    """The signed-in user and their roles."""

    @extend_schema(responses=MeSerializer)
    def get(self, request):
        user = request.user
        data = {
            "id": user.pk,
            "email": user.email,
            "display_name": user.display_name,
            "roles": sorted(role.value for role in roles_of(user)),
        }
        return Response(MeSerializer(data).data)


class TokenView(ObtainAuthToken):
    """An API token for an email address (`username`) and password. Failures count as on the log-in page: after
    too many in a row for one account from one client address, it answers 429 until the lockout ends."""

    permission_classes = [AllowAny]  # said outright (it is open either way) so the schema shows it needs no sign-in

    def get_serializer_context(self):
        # authenticate() is given Django's request, not DRF's wrapper of it: django-axes marks a locked-out attempt
        # on the request it is given, and its middleware, which answers with the lockout, reads Django's.
        return {**super().get_serializer_context(), "request": self.request._request}

    @extend_schema(responses={200: AuthTokenSerializer, 429: OpenApiResponse(
        description="Too many failed attempts for this address from this client; see Retry-After.")})
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)
