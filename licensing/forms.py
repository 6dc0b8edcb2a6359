from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Artist


class BecomeArtistForm(forms.Form):
    display_name = forms.CharField(label=_("Display name"), max_length=80)
    slug = forms.SlugField(label=_("Profile address (slug)"), max_length=50,
                           help_text=_("Letters, numbers, hyphens; your page will be at /studio/artists/<slug>/."))
    bio = forms.CharField(label=_("Bio"), widget=forms.Textarea(attrs={"rows": 4}), required=False)
    links = forms.CharField(label=_("Links (one per line)"), widget=forms.Textarea(attrs={"rows": 3}), required=False)
    payout_contact = forms.CharField(label=_("Payout contact"), max_length=200, required=False)
    accept_agreement = forms.BooleanField(label=_("I accept the artist agreement shown above"))
    # The version shown above, so that a newer one published while the page was open is not accepted unseen.
    agreement_version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1, error_messages={
        "invalid": _("The page sent an unreadable agreement version; reload it and accept the agreement again."),
        "min_value": _("The page sent an unreadable agreement version; reload it and accept the agreement again."),
    })
    # The language it was shown in, recorded with the acceptance.
    agreement_language = forms.CharField(widget=forms.HiddenInput, required=False, max_length=8)

    def clean_agreement_language(self):
        return self.cleaned_data["agreement_language"] or None


class ArtistProfileForm(forms.ModelForm):
    class Meta:
        model = Artist
        fields = ["display_name", "slug", "bio", "avatar", "links", "payout_contact"]
        widgets = {"bio": forms.Textarea(attrs={"rows": 4}), "links": forms.Textarea(attrs={"rows": 3})}


class CaptionsForm(forms.Form):
    """The bulk part of the caption editor: selected ids plus one of the bulk operations."""

    selected = forms.TypedMultipleChoiceField(coerce=int, required=False, choices=())
    bulk_caption = forms.CharField(label=_("Caption for the selected works"), required=False, max_length=2000)
    find = forms.CharField(label=_("Find"), required=False, max_length=500, strip=False)
    replace = forms.CharField(label=_("Replace with"), required=False, max_length=500, strip=False)

    def __init__(self, *args, work_ids=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["selected"].choices = [(pk, pk) for pk in work_ids]
