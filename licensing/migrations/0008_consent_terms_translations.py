"""Translations of consent terms, and the Japanese of the first terms the platform ships (0003), so that an artist
reading the site in Japanese can read what they accept. Added only where version 1 still has the shipped words."""

import django.db.models.deletion
from django.db import migrations, models

# The shipped words of version 1 (0003), and their Japanese.
FIRST_TERMS_IN_JAPANESE = {
    (
        "training",
        "Consent to train a style adapter",
        "I allow the platform to use this work, with its caption, to train a style adapter of my style. "
        "I can withdraw this consent at any time; any adapter trained on the work is then retired at once "
        "and never used again. I am paid a share of subscription revenue for images made in my style.",
    ): (
        "スタイルアダプターの学習への同意",
        "私は、この作品をキャプションとともに、私の画風を再現するスタイルアダプターの学習に使うことをプラットフォームに"
        "許可します。この同意はいつでも撤回できます。撤回すると、その作品で学習したアダプターはすぐに廃止され、二度と"
        "使われません。私の画風で作られた画像について、会費収入の一部が私に支払われます。",
    ),
    (
        "artist_agreement",
        "Artist agreement",
        "I upload only works I made and hold the rights to. I choose work by work what may be used for "
        "training, and I may leave at any time, which withdraws every consent and deletes my works.",
    ): (
        "アーティスト規約",
        "私は、自分で制作し、権利を持つ作品だけをアップロードします。学習に使ってよいかは作品ごとに自分で選びます。いつで"
        "も退会でき、退会するとすべての同意が撤回され、私の作品は削除されます。",
    ),
}


def add_first_translations(apps, schema_editor):
    ConsentTerms = apps.get_model("licensing", "ConsentTerms")
    ConsentTermsTranslation = apps.get_model("licensing", "ConsentTermsTranslation")
    for (kind, title, text), (japanese_title, japanese_text) in FIRST_TERMS_IN_JAPANESE.items():
        terms = ConsentTerms.objects.filter(kind=kind, version=1, title=title, text=text).first()
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
                ('language', models.CharField(choices=[('ja', 'Japanese')], max_length=8, verbose_name='language')),
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
