import itertools

import factory
from django.contrib.auth import get_user_model

from licensing.models import Artist

PASSWORD = "a-long-test-password-42"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    display_name = factory.Sequence(lambda n: f"User {n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def saved(user, create, extracted, **kwargs):
        if create:
            user.save()


class StaffFactory(UserFactory):
    is_staff = True
    is_superuser = True


class ArtistFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Artist

    user = factory.SubFactory(UserFactory)
    display_name = factory.Sequence(lambda n: f"Artist {n}")
    slug = factory.Sequence(lambda n: f"artist-{n}")


# Licensing ---------------------------------------------------------------


class ConsentTermsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "licensing.ConsentTerms"
        django_get_or_create = ("kind", "version")

    kind = "training"
    version = 1
    title = factory.LazyAttribute(lambda o: f"{o.kind} v{o.version}")
    text = "I allow training on this work and may withdraw at any time."


# Default images of their own: two artists' works of one image would be held as copies of each other.
_unused_seeds = itertools.count(1_000_000)


def make_work(artist, seed=None, caption="a drawing", **kwargs):
    """Upload a real generated PNG for `artist` through the licensing service; returns the Work."""
    from licensing.services import work_upload
    from tests.licensing.images import good_png

    if seed is None:
        seed = next(_unused_seeds)
    result = work_upload(artist=artist, data=good_png(seed), filename=f"work-{seed}.png", caption=caption)
    assert result.status == "created", result.message
    work = result.work
    if kwargs:
        for name, value in kwargs.items():
            setattr(work, name, value)
        work.save()
    return work
