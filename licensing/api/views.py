"""The works, consent and snapshot API; thin views over licensing.services and licensing.selectors."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.generics import RetrieveAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from illustration_platform.accounts.roles import IsArtist
from illustration_platform.api.parsers import BoundedJSONParser

from .. import selectors, services
from ..models import ConsentEvent, DatasetSnapshot, Work
from ..validation import ImageRefused, refuse_if_too_large
from . import serializers as s


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "duplicate"


def _refuse(error):
    code = getattr(error, "code", "invalid")
    if code == "terms_changed":  # the request was sound; the terms moved under it
        raise Conflict(error.message, code=code)
    raise ValidationError({"non_field_errors": [error.message]}, code=code)


def _terms_shown(request):
    """The terms version and language the client showed, as keyword arguments of the opt-in services."""
    form = s.OptInSerializer(data=request.data or {})  # these calls took no body before: a JSON null is none
    form.is_valid(raise_exception=True)
    return {"terms_version": form.validated_data.get("terms_version"),
            "terms_language": form.validated_data.get("terms_language")}


class WorkViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                  mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The signed-in artist's own works; anyone else's work answers 404."""

    permission_classes = [IsArtist]
    serializer_class = s.WorkSerializer
    queryset = Work.objects.none()  # for the schema; requests use get_queryset
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    lookup_value_regex = r"[0-9]+"  # "abc" is a 404 from the router, not a ValueError from the lookup

    def get_queryset(self):
        return selectors.works_of_artist(artist=self.request.user.artist)

    def get_object(self):
        return selectors.work_for_user(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(
        request={"multipart/form-data": s.WorkUploadSerializer},
        responses={201: s.WorkUploadResultSerializer, 400: OpenApiResponse(description="The file was refused."),
                   409: OpenApiResponse(description="An exact duplicate of one of your works; nothing stored.")},
    )
    def create(self, request):
        form = s.WorkUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["image"]
        try:
            if upload.size is not None:
                refuse_if_too_large(upload.size)
            result = services.work_upload(
                artist=request.user.artist, data=upload.read(), filename=upload.name or "",
                caption=form.validated_data["caption"],
            )
        except (ImageRefused, services.LicensingError) as error:
            _refuse(error)
        if result.status == "duplicate":
            raise Conflict(result.message)
        data = s.WorkUploadResultSerializer(result.work).data | {"warnings": [str(w) for w in result.warnings]}
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.WorkSerializer, responses=s.WorkSerializer)
    def partial_update(self, request, pk=None):
        work = self.get_object()
        form = s.WorkSerializer(work, data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        try:
            work = services.work_update(work=work, **form.validated_data)
        except services.LicensingError as error:
            _refuse(error)
        return Response(s.WorkSerializer(selectors.work_for_user(user=request.user, pk=work.pk)).data)

    def update(self, request, *args, **kwargs):  # PUT is not offered; PATCH changes caption and shown flag
        return self.partial_update(request, *args, **kwargs)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.work_delete(work=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.OptInSerializer, responses={201: s.ConsentEventSerializer, 409: OpenApiResponse(
        description="The consent terms in force are not the terms_version given.")})
    @action(detail=True, methods=["post"], url_path="opt-in")
    def opt_in(self, request, pk=None):
        work = self.get_object()
        shown = _terms_shown(request)
        try:
            event = services.work_opt_in(work=work, actor=request.user, **shown)
        except services.LicensingError as error:
            _refuse(error)
        return Response(s.ConsentEventSerializer(event).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.WithdrawSerializer, responses={201: s.ConsentEventSerializer, 204: None})
    @action(detail=True, methods=["post"], url_path="opt-out")
    def opt_out(self, request, pk=None):
        form = s.WithdrawSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        event = services.work_withdraw(work=self.get_object(), actor=request.user, reason=form.validated_data["reason"])
        if event is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(s.ConsentEventSerializer(event).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=s.ConsentEventSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)  # a work's few events, whole
    def consent(self, request, pk=None):
        events = selectors.consent_history(artist=request.user.artist, work=self.get_object())
        return Response(s.ConsentEventSerializer(events, many=True).data)

    @extend_schema(request=s.OptInSerializer, responses={200: s.OptInAllResultSerializer, 409: OpenApiResponse(
        description="The consent terms in force are not the terms_version given.")})
    @action(detail=False, methods=["post"], url_path="opt-in-eligible")
    def opt_in_eligible(self, request):
        shown = _terms_shown(request)
        try:
            events = services.works_opt_in_eligible(artist=request.user.artist, actor=request.user, **shown)
        except services.LicensingError as error:
            _refuse(error)
        return Response({"opted_in": [e.work_id for e in events], "events": s.ConsentEventSerializer(events, many=True).data})

    @extend_schema(request=s.CaptionsApplySerializer, responses=s.ChangedSerializer)
    @action(detail=False, methods=["post"], url_path="captions/apply")
    def captions_apply(self, request):
        form = s.CaptionsApplySerializer(data=request.data)
        form.is_valid(raise_exception=True)
        changed = services.work_captions_apply(artist=request.user.artist, **form.validated_data)
        return Response({"changed": changed})

    @extend_schema(request=s.CaptionsReplaceSerializer, responses=s.ChangedSerializer)
    @action(detail=False, methods=["post"], url_path="captions/replace")
    def captions_replace(self, request):
        form = s.CaptionsReplaceSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            changed = services.work_captions_replace(artist=request.user.artist, **form.validated_data)
        except services.LicensingError as error:
            _refuse(error)
        return Response({"changed": changed})


class ConsentEventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The signed-in artist's whole consent history, newest first."""

    permission_classes = [IsArtist]
    serializer_class = s.ConsentEventSerializer
    queryset = ConsentEvent.objects.none()

    def get_queryset(self):
        return selectors.consent_history(artist=self.request.user.artist)


class DatasetSnapshotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                             viewsets.GenericViewSet):
    """Frozen datasets of the signed-in artist's opted-in works."""

    permission_classes = [IsArtist]
    serializer_class = s.DatasetSnapshotSerializer
    queryset = DatasetSnapshot.objects.none()
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return DatasetSnapshot.objects.filter(artist=self.request.user.artist).select_related("terms")

    @extend_schema(request=None, responses={201: s.DatasetSnapshotSerializer})
    def create(self, request):
        try:
            snapshot = services.dataset_snapshot_create(artist=request.user.artist)
        except services.LicensingError as error:
            _refuse(error)
        return Response(s.DatasetSnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)


@extend_schema(responses={200: s.ConsentTermsSerializer, 404: OpenApiResponse(description="No terms are in force yet.")})
class ConsentTermsCurrentView(RetrieveAPIView):
    """The consent terms version artists accept now."""

    permission_classes = [AllowAny]
    serializer_class = s.ConsentTermsSerializer

    def get_object(self):
        from django.http import Http404

        from ..models import ConsentTerms

        terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
        if terms is None:
            raise Http404
        return terms


class PublicArtistView(RetrieveAPIView):
    """An artist's public profile and the works they chose to show."""

    permission_classes = [AllowAny]
    serializer_class = s.PublicArtistSerializer
    lookup_field = "slug"

    def get_object(self):
        return selectors.artist_public(slug=self.kwargs["slug"])
