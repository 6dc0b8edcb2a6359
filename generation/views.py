import re
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from illustration_platform.accounts.roles import Role, role_required

from . import presentation, services
from .models import AdapterVersion, Style
from .selectors import styles_of_artist, versions_to_go_live


def _own_version(request, version_id):
    return get_object_or_404(AdapterVersion.objects.select_related("style", "job", "snapshot", "base_model"), pk=version_id, style__artist__user=request.user)


def _run(request, action, answer, refused_query=None):
    """Run a service and go back to the style page; on a refusal, with the form's choices in `refused_query`.
    `answer` is the sentence shown on success, or a function of what the service returned giving
    (message level, sentence)."""
    try:
        result = action()
    except ValidationError as refusal:
        messages.error(request, refusal.messages[0])
        if refused_query:
            return redirect(f"{reverse('generation:style')}?{urlencode(refused_query)}")
    else:
        level, sentence = answer(result) if callable(answer) else (messages.SUCCESS, answer)
        messages.add_message(request, level, sentence)
    return redirect("generation:style")


@role_required(Role.ARTIST)
def style_page(request):
    artist = request.user.artist
    styles = list(styles_of_artist(artist=artist))
    context = presentation.style_page_context(artist=artist, styles=styles)
    # A refused "Train my style" comes back with what was chosen.
    preset = request.GET.get("preset")
    context["chosen_preset"] = preset if preset in dict(presentation.PRESET_CHOICES) else "standard"
    # Quick is a first look, not published unless asked for (as the page's script does when quick is chosen).
    default = "off" if context["chosen_preset"] == "quick" else "on"
    context["publish_when_ready"] = request.GET.get("publish_when_ready", default) != "off"
    return render(request, "generation/style.html", context)


@role_required(Role.ARTIST)
def job_panel(request, version_id):
    version = _own_version(request, version_id)
    response = render(request, "generation/_job_poll.html", {"job": presentation.job_state(version)})
    if request.headers.get("HX-Request") and not version.is_active:
        response["HX-Refresh"] = "true"  # the training ended: the heading, buttons and versions change too
    return response


@role_required(Role.ARTIST)
@require_POST
def train(request):
    preset = request.POST.get("preset", "standard")
    publish = request.POST.get("publish_when_ready") == "on"
    return _run(
        request,
        lambda: services.style_training_start(artist=request.user.artist, actor=request.user, preset=preset, publish_when_ready=publish),
        presentation.training_started_message,
        refused_query={"preset": preset, "publish_when_ready": "on" if publish else "off"},
    )


@role_required(Role.ARTIST)
@require_POST
def cancel(request, version_id):
    version = _own_version(request, version_id)
    return _run(request, lambda: services.training_cancel(adapter_version=version), presentation.cancel_message)


@role_required(Role.ARTIST)
@require_POST
def publish(request, version_id):
    version = _own_version(request, version_id)
    going_live = [n for n in versions_to_go_live(style=version.style) if n != version.number]
    return _run(request, lambda: services.adapter_version_publish(adapter_version=version),
                lambda _style: presentation.published_message(version, going_live))


@role_required(Role.ARTIST)
@require_POST
def unpublish(request, style_id):
    style = get_object_or_404(Style, pk=style_id, artist__user=request.user)
    # The version the page showed as published (a form from before it was sent unpublishes whatever is).
    shown = request.POST.get("version")
    if shown is not None:
        if not re.fullmatch(r"[0-9]{1,18}", shown):  # not "²", which isdigit() takes and int() refuses
            messages.error(request, _("The page sent an unreadable version; reload it. Nothing was changed."))
            return redirect("generation:style")
        shown = get_object_or_404(AdapterVersion, pk=shown, style=style)
    published, going_live = shown or style.published_version, versions_to_go_live(style=style)
    return _run(request, lambda: services.style_unpublish(style=style, shown_version=shown),
                lambda _style: presentation.unpublished_message(published, going_live))
