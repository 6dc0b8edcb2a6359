"""What every request serializer of the API shares."""

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers


class RefusesUnknownFields:
    """Mixed into a request serializer: a field it does not know is refused (400, naming it), not dropped, so a
    misspelt `captoin` or an unsupported `steps` never looks accepted. Read-only fields are known: a client may
    send back what it read. Django's CSRF token, which a form posted from a page carries, is the request's, not a
    field."""

    def validate(self, attrs):
        if hasattr(self.initial_data, "keys"):
            unknown = sorted(set(self.initial_data.keys()) - set(self.fields) - {"csrfmiddlewaretoken"})
            if unknown:
                raise serializers.ValidationError({name: [_("This field is not known here.")] for name in unknown})
        return super().validate(attrs)
