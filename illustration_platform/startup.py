"""Start-up errors as one clear sentence instead of a traceback wall."""

import sys

from django.core.exceptions import ImproperlyConfigured


def describe_database(settings_dict):
    if settings_dict.get("ENGINE", "").endswith("sqlite3"):
        return f"SQLite file {settings_dict.get('NAME')}"
    return f"{settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 'default port'}/{settings_dict.get('NAME')}"


def run_cleanly(main):
    """Run `main`; a configuration error or an unreachable database ends it with one sentence and exit code 2."""
    from django.db.utils import OperationalError

    try:
        return main()
    except ImproperlyConfigured as error:
        sys.stderr.write(f"Configuration error: {error}\n")
    except OperationalError as error:
        from django.db import connection

        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        sys.stderr.write(f"The database ({describe_database(connection.settings_dict)}) cannot be used: {reason}\n")
    sys.exit(2)
