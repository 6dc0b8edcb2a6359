"""Database-level append-only guard for consent events and snapshots, and the first terms texts.

PostgreSQL: a trigger refuses UPDATE and DELETE (TRUNCATE, used by test flushes, is a table operation and is
not covered). SQLite: a trigger refuses UPDATE (DELETE is left to the model and queryset, because Django's
SQLite test flush deletes rows one table at a time).
"""

from django.db import migrations

TABLES = ["licensing_consentevent", "licensing_datasetsnapshot"]

FIRST_TERMS = [
    {
        "kind": "training",
        "version": 1,
        "title": "Consent to train a style adapter",
        "text": (
            "I allow the platform to use this work, with its caption, to train a style adapter of my style. "
            "I can withdraw this consent at any time; any adapter trained on the work is then retired at once "
            "and never used again. I am paid a share of subscription revenue for images made in my style."
        ),
    },
    {
        "kind": "artist_agreement",
        "version": 1,
        "title": "Artist agreement",
        "text": (
            "I upload only works I made and hold the rights to. I choose work by work what may be used for "
            "training, and I may leave at any time, which withdraws every consent and deletes my works."
        ),
    },
]


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in TABLES:
        if vendor == "postgresql":
            schema_editor.execute(
                f"""
                CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
                BEGIN
                    RAISE EXCEPTION '{table} is append-only: rows cannot be updated or deleted';
                END;
                $$ LANGUAGE plpgsql;
                """
            )
            schema_editor.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only();"
            )
        elif vendor == "sqlite":
            schema_editor.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be updated'); END;"
            )
    ConsentTerms = apps.get_model("licensing", "ConsentTerms")
    for terms in FIRST_TERMS:
        ConsentTerms.objects.get_or_create(kind=terms["kind"], version=terms["version"], defaults=terms)


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in TABLES:
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {table}_append_only();")
        elif vendor == "sqlite":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only;")


class Migration(migrations.Migration):
    dependencies = [("licensing", "0002_works_consent_snapshots")]
    operations = [migrations.RunPython(forwards, backwards)]
