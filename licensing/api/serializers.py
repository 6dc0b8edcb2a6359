from django.urls import reverse
from rest_framework import serializers

from illustration_platform.api.serializers import RefusesUnknownFields

from ..models import Artist, ConsentEvent, ConsentTerms, ConsentTermsTranslation, DatasetSnapshot, Work


class ConsentTermsTranslationSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConsentTermsTranslation
        fields = ["language", "title", "text"]


class ConsentTermsSerializer(serializers.ModelSerializer):
    translations = ConsentTermsTranslationSerializer(
        many=True, read_only=True,
        help_text="The same words in other languages, for reading; where one differs, title and text apply.")
    original_language = serializers.CharField(read_only=True, help_text="The language of title and text.")

    class Meta:
        model = ConsentTerms
        fields = ["id", "kind", "version", "title", "text", "original_language", "published_at", "translations"]


class ConsentEventSerializer(serializers.ModelSerializer):
    terms_version = serializers.IntegerField(source="terms.version", read_only=True, allow_null=True)
    actor = serializers.EmailField(source="actor.email", read_only=True)
    reason = serializers.CharField(source="reason_shown", read_only=True, help_text="In the reader's language.")

    class Meta:
        model = ConsentEvent
        fields = ["id", "work", "kind", "terms_version", "terms_language", "actor", "reason", "created_at"]


class WorkSerializer(RefusesUnknownFields, serializers.ModelSerializer):
    consent = serializers.SerializerMethodField()
    consent_terms_version = serializers.SerializerMethodField()
    eligible = serializers.BooleanField(source="is_eligible", read_only=True)
    ineligible_reason = serializers.SerializerMethodField()
    do_not_train_reason = serializers.CharField(source="do_not_train_reason_shown", read_only=True)
    ownership_held = serializers.BooleanField(
        read_only=True, help_text="The same image as another artist's work: it cannot be opted in until staff confirm "
        "this artist made it. Which work is not said.",
    )
    copy_held_for_review = serializers.BooleanField(
        read_only=True, help_text="Another artist's upload of this work is held for review (whose is not said).",
    )
    original_url = serializers.SerializerMethodField()
    training_image_url = serializers.SerializerMethodField()

    class Meta:
        model = Work
        fields = [
            "id", "original_name", "original_format", "width", "height", "sha256", "phash", "caption",
            "shown_on_profile", "do_not_train", "do_not_train_reason", "near_duplicate_of", "ownership_held",
            "copy_held_for_review", "consent", "consent_terms_version", "eligible", "ineligible_reason", "original_url",
            "training_image_url", "created_at",
        ]
        read_only_fields = [name for name in fields if name not in ("caption", "shown_on_profile")]

    def get_consent(self, work) -> str:
        return work.current_consent.kind if work.current_consent_id else "none"

    def get_consent_terms_version(self, work) -> int | None:
        if work.current_consent_id and work.current_consent.terms_id:
            return work.current_consent.terms.version
        return None

    def get_ineligible_reason(self, work) -> str:
        return str(work.ineligible_reason)

    def _url(self, work, kind) -> str:
        return reverse("licensing:work_file", args=[work.pk, kind])

    def get_original_url(self, work) -> str:
        return self._url(work, "original")

    def get_training_image_url(self, work) -> str:
        return self._url(work, "training")


class WorkUploadSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="A PNG, JPEG or WebP image.", allow_empty_file=True)
    caption = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class WorkUploadResultSerializer(WorkSerializer):
    warnings = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta(WorkSerializer.Meta):
        fields = WorkSerializer.Meta.fields + ["warnings"]


class OptInSerializer(RefusesUnknownFields, serializers.Serializer):
    terms_version = serializers.IntegerField(
        required=False, min_value=1, max_value=2**31 - 1,
        help_text="The consent terms version shown to the artist (GET /api/consent-terms/current/). When given and "
                  "another version is now in force, nothing is opted in and the answer is 409 with code "
                  "terms_changed. Without it, consent is recorded under the version in force.",
    )
    terms_language = serializers.CharField(
        required=False, max_length=8,
        help_text="The language the terms were shown in: the original's (`original_language` of the terms) or one of "
                  "their `translations`. Recorded with the consent; one the terms have no text in is refused (400). "
                  "Without it, the language is recorded as not known.",
    )


class WithdrawSerializer(RefusesUnknownFields, serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)


def _work_id():
    # Bounded to what a database integer holds: a larger number is refused here, not an OverflowError in the query.
    return serializers.IntegerField(min_value=1, max_value=2**63 - 1)


class WorkIdsSerializer(RefusesUnknownFields, serializers.Serializer):
    work_ids = serializers.ListField(child=_work_id(), allow_empty=False)


class CaptionsApplySerializer(WorkIdsSerializer):
    caption = serializers.CharField(allow_blank=True, max_length=2000)


class CaptionsReplaceSerializer(RefusesUnknownFields, serializers.Serializer):
    find = serializers.CharField(max_length=500, trim_whitespace=False)
    replace = serializers.CharField(max_length=500, allow_blank=True, trim_whitespace=False)
    work_ids = serializers.ListField(child=_work_id(), required=False)


class ChangedSerializer(serializers.Serializer):
    changed = serializers.IntegerField()


class OptInAllResultSerializer(serializers.Serializer):
    opted_in = serializers.ListField(child=serializers.IntegerField())
    events = ConsentEventSerializer(many=True)


class DatasetSnapshotSerializer(serializers.ModelSerializer):
    terms_version = serializers.IntegerField(source="terms.version", read_only=True)

    class Meta:
        model = DatasetSnapshot
        fields = ["id", "terms_version", "work_count", "fingerprint", "entries", "created_at"]
        read_only_fields = fields


class PublicWorkSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = Work
        fields = ["id", "caption", "width", "height", "image_url"]

    def get_image_url(self, work) -> str:
        return reverse("licensing:work_file", args=[work.pk, "original"])


class PublicArtistSerializer(serializers.ModelSerializer):
    links = serializers.ListField(source="link_list", child=serializers.CharField(), read_only=True)
    works = serializers.SerializerMethodField()

    class Meta:
        model = Artist
        fields = ["slug", "display_name", "bio", "links", "works"]

    def get_works(self, artist) -> list[dict]:
        from ..selectors import works_shown

        return PublicWorkSerializer(works_shown(artist=artist), many=True).data
