from .roles import Role, roles_of


def roles(request):
    user_roles = roles_of(request.user)
    return {
        "is_subscriber": Role.SUBSCRIBER in user_roles,
        "is_artist": Role.ARTIST in user_roles,
        "is_staff_member": Role.STAFF in user_roles,
    }
