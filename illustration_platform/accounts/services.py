from django.contrib.auth import get_user_model
from django.db import transaction


@transaction.atomic
def user_create(*, email, password, display_name="", is_staff=False, is_superuser=False):
    return get_user_model().objects.create_user(
        email=email, password=password, display_name=display_name, is_staff=is_staff, is_superuser=is_superuser
    )
