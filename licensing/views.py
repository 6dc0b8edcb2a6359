from django.shortcuts import render

from illustration_platform.accounts.roles import Role, role_required


@role_required(Role.ARTIST)
def studio(request):
    return render(request, "licensing/studio.html", {"artist": request.user.artist})
