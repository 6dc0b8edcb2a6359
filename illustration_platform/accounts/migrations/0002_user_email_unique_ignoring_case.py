from django.core.management import CommandError
from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import Lower


def lowercase_emails(apps, schema_editor):
    """Addresses are stored in lower case from now on; two accounts that differ only in capitals cannot both
    keep theirs, and which one to keep is for staff to decide, so the migration names them and stops."""
    User = apps.get_model("accounts", "User")
    clashes = (User.objects.annotate(folded=Lower("email")).values("folded").annotate(accounts=Count("id"))
               .filter(accounts__gt=1).values_list("folded", flat=True))
    if clashes:
        addresses = sorted(User.objects.annotate(folded=Lower("email")).filter(folded__in=list(clashes))
                           .values_list("email", flat=True))
        raise CommandError(
            "Accounts whose email addresses differ only in capitals: " + ", ".join(addresses)
            + ". Log-in no longer tells them apart: change or remove all but one of each in the admin, then migrate again."
        )
    User.objects.exclude(email=Lower("email")).update(email=Lower("email"))


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(lowercase_emails, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                Lower("email"), name="user_email_unique_ignoring_case",
                violation_error_message="An account with this email address already exists.",
            ),
        ),
    ]
