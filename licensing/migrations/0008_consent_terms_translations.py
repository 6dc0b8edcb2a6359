"""Translations of consent terms, and the Japanese of the first terms the platform ships (0003), so that an artist
reading the site in Japanese can read what they accept. Added only where version 1 still has the shipped words."""

import django.db.models.deletion
from django.db import migrations, models

FIRST_TERMS_IN_JAPANESE = {
    ("training", "Consent to train a style adapter"): (
        "スタイルアダプターの学習への同意",
        "私は、この作品をキャプションとともに、私のスタイルのスタイルアダプターの学習に使うことをプラットフォームに許可"
        "します。この同意はいつでも撤回できます。撤回すると、その作品で学習したアダプターはすぐに廃止され、二度と使われ"
        "ません。私のスタイルで作られた画像について、購読料の一部が私に支払われます。",
    ),
    ("artist_agreement", "Artist agreement"): (
        "アーティスト規約",
        "私は、自分で制作し、権利を持つ作品だけをアップロードします。学習に使ってよいかは作品ごとに自分で選びます。いつで"
        "も退会でき、退会するとすべての同意が撤回され、私の作品は削除されます。",
    ),
}


def add_first_translations(apps, schema_editor):
    ConsentTerms = apps.get_model("licensing", "ConsentTerms")
    ConsentTermsTranslation = apps.get_model("licensing", "ConsentTermsTranslation")
    for (kind, title), (japanese_title, japanese_text) in FIRST_TERMS_IN_JAPANESE.items():
        terms = ConsentTerms.objects.filter(kind=kind, version=1, title=title).first()
        if terms is not None:
            ConsentTermsTranslation.objects.get_or_create(
                terms=terms, language="ja", defaults={"title": japanese_title, "text": japanese_text})


class Migration(migrations.Migration):

    dependencies = [
        ('licensing', '0007_work_copied_artist_told_at'),
    ]

    operations = [
        migrations.CreateModel(
            name='ConsentTermsTranslation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('language', models.CharField(choices=[('en', 'English'), ('ja', 'Japanese')], max_length=8, verbose_name='language')),
                ('title', models.CharField(max_length=200, verbose_name='title')),
                ('text', models.TextField(verbose_name='text')),
                ('terms', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='translations', to='licensing.consentterms', verbose_name='consent terms')),
            ],
            options={
                'verbose_name': 'consent terms translation',
                'verbose_name_plural': 'consent terms translations',
                'constraints': [models.UniqueConstraint(fields=('terms', 'language'), name='consent_terms_translation_unique')],
            },
        ),
        migrations.RunPython(add_first_translations, migrations.RunPython.noop),
    ]
