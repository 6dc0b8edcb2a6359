from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from .forms import SignUpForm
from .lockout import forget_failures
from .roles import roles_of
from .services import user_create

# Shown on the account page; the API keeps the plain role values.
ROLE_NAMES = {
    "subscriber": pgettext_lazy("role", "subscriber"),
    "artist": pgettext_lazy("role", "artist"),
    "staff": pgettext_lazy("role", "staff"),
}


def sign_up(request):
    if request.user.is_authenticated:
        return redirect("site:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_create(
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
            display_name=form.cleaned_data["display_name"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Welcome! Your account is ready."))
        return redirect("site:home")
    return render(request, "accounts/sign_up.html", {"form": form})


@login_required
def account(request):
    names = sorted(role.value for role in roles_of(request.user))
    return render(request, "accounts/account.html", {"roles": [ROLE_NAMES.get(name, name) for name in names]})


class PasswordChangeView(auth_views.PasswordChangeView):
    """A signed-in user changes their password (the old one asked first); the session stays signed in."""

    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("accounts:account")

    def form_valid(self, form):
        messages.success(self.request, _("Your password is changed."))
        return super().form_valid(form)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Setting a new password from the mailed link also ends a log-in lockout, as the lockout page promises."""

    def form_valid(self, form):
        response = super().form_valid(form)
        forget_failures(form.user)
        return response
