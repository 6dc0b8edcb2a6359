from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.exceptions import APIException, ValidationError as ApiValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from illustration_platform.accounts.roles import IsArtistOrNotFound

from .. import services
from ..models import AdapterVersion, Style
from ..presentation import job_state, queue_refusal
from ..selectors import styles_with_version_ids
from ..storage import preview_path
from .serializers import NoFieldsSerializer, StyleSerializer, TrainingStateSerializer, TrainRequestSerializer


class NotQueued(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "not_queued"


def _call(action):
    """Run a service; its refusal becomes the API's 400 with the same sentence."""
    try:
        return action()
    except ValidationError as refusal:
        raise ApiValidationError({"non_field_errors": refusal.messages}) from None


def _no_fields(request):
    """An action that takes no body refuses one it is sent (a `version` it would silently ignore)."""
    NoFieldsSerializer(data=request.data).is_valid(raise_exception=True)


def _own_version(request, version_id):
    return get_object_or_404(AdapterVersion.objects.select_related("style", "job", "snapshot", "base_model"), pk=version_id, style__artist__user=request.user)


def _state_response(version, code=status.HTTP_200_OK):
    version = AdapterVersion.objects.select_related("job", "snapshot", "base_model").get(pk=version.pk)
    return Response(TrainingStateSerializer(job_state(version)).data, status=code)


class StyleListView(APIView):
    """The signed-in artist's styles."""

    permission_classes = [IsArtistOrNotFound]

    @extend_schema(responses=StyleSerializer(many=True))
    def get(self, request):
        return Response(StyleSerializer(styles_with_version_ids(artist=request.user.artist), many=True).data)


class TrainView(APIView):
    """Train my style: freeze the opted-in works into a snapshot and queue a new adapter version."""

    permission_classes = [IsArtistOrNotFound]

    @extend_schema(request=TrainRequestSerializer, responses={
        201: TrainingStateSerializer,
        503: OpenApiResponse(description="The task queue did not take the training: it is recorded as failed, with the "
                                         "sentence in the message; start it again in a moment."),
    })
    def post(self, request):
        params = TrainRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        version = _call(lambda: services.style_training_start(artist=request.user.artist, actor=request.user, **params.validated_data))
        refusal = queue_refusal(version)
        if refusal:
            raise NotQueued(refusal)
        return _state_response(version, status.HTTP_201_CREATED)


class AdapterVersionView(APIView):
    """One adapter version's training state: progress, losses, ETA, previews, log, failure."""

    permission_classes = [IsArtistOrNotFound]

    @extend_schema(responses=TrainingStateSerializer)
    def get(self, request, version_id):
        return _state_response(_own_version(request, version_id))


class CancelView(APIView):
    permission_classes = [IsArtistOrNotFound]

    @extend_schema(request=None, responses=TrainingStateSerializer)
    def post(self, request, version_id):
        version = _own_version(request, version_id)
        _no_fields(request)
        _call(lambda: services.training_cancel(adapter_version=version))
        return _state_response(version)


class PublishView(APIView):
    """Publish this version (or roll back to it): generation then uses it for the style."""

    permission_classes = [IsArtistOrNotFound]

    @extend_schema(request=None, responses=StyleSerializer)
    def post(self, request, version_id):
        version = _own_version(request, version_id)
        _no_fields(request)
        style = _call(lambda: services.adapter_version_publish(adapter_version=version))
        return Response(StyleSerializer(style).data)


class UnpublishView(APIView):
    permission_classes = [IsArtistOrNotFound]

    @extend_schema(request=None, responses=StyleSerializer)
    def post(self, request, style_id):
        style = get_object_or_404(Style, pk=style_id, artist__user=request.user)
        _no_fields(request)
        return Response(StyleSerializer(services.style_unpublish(style=style)).data)


class ServeRegardlessOfAccept(BaseContentNegotiation):
    """The image is the answer whatever the client accepts (an <img> asks for image/*, DRF would say 406);
    errors still come back as JSON."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class PreviewView(APIView):
    """One preview image of a training (PNG), for its owner: the page and token clients alike."""

    permission_classes = [IsArtistOrNotFound]
    content_negotiation_class = ServeRegardlessOfAccept

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request, version_id, name):
        version = _own_version(request, version_id)
        # Only the files the training lists: any other name, however odd or long, is simply not found.
        job = getattr(version, "job", None)
        if job is None or name not in {preview["file"] for preview in job.previews}:
            raise Http404
        path = preview_path(version, name)
        if not path.is_file():  # listed, but removed with a retired version's files
            raise Http404
        return FileResponse(open(path, "rb"), content_type="image/png")
