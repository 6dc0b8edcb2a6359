"""A do-not-train reason is stored as the catalogue's English with its values apart, and translated when shown.

Reasons written before, with their values inside, are split the same way so that they translate too.
"""

import re

from django.db import migrations, models

WRITTEN_BEFORE = [
    (re.compile(r"Its Content Credentials say AI training is (?P<use>.*) \((?P<label>.*): (?P<key>[^)]*)\)\.\Z"),
     "Its Content Credentials say AI training is %(use)s (%(label)s: %(key)s)."),
    (re.compile(r"Its XMP metadata says data mining is prohibited \(plus:DataMining (?P<value>[^)]*)\)\.\Z"),
     "Its XMP metadata says data mining is prohibited (plus:DataMining %(value)s)."),
]


def split_values(apps, schema_editor):
    Work = apps.get_model("licensing", "Work")
    for work in Work.objects.exclude(do_not_train_reason="").only("do_not_train_reason"):
        for pattern, reason in WRITTEN_BEFORE:
            match = pattern.match(work.do_not_train_reason)
            if match:
                Work.objects.filter(pk=work.pk).update(do_not_train_reason=reason, do_not_train_params=match.groupdict())
                break


def join_values(apps, schema_editor):
    Work = apps.get_model("licensing", "Work")
    for work in Work.objects.exclude(do_not_train_params={}).only("do_not_train_reason", "do_not_train_params"):
        Work.objects.filter(pk=work.pk).update(do_not_train_reason=work.do_not_train_reason % work.do_not_train_params)


class Migration(migrations.Migration):

    dependencies = [
        ("licensing", "0004_verbose_names"),
    ]

    operations = [
        migrations.AddField(
            model_name="work",
            name="do_not_train_params",
            field=models.JSONField(blank=True, default=dict, verbose_name="do-not-train reason values"),
        ),
        migrations.RunPython(split_values, join_values),
    ]
