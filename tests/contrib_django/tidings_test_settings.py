"""Django settings for tidings' own tests (pytest-django, and the hubs they start)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The hub a test starts (`python -m django tidings`) reads the test's database file.
DB_FILE = os.environ.get(
    "DJANGO_TEST_DB", str(Path(tempfile.gettempdir()) / f"tidings-django-{os.getpid()}.sqlite3")
)

# The Django site as the hub tests see it: another port of the same host.
PAGE_ORIGIN = "http://127.0.0.1:8000"

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "tidings.contrib.django",
    "notices",  # examples/django_notifications (on the tests' pythonpath)
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tidings_test_urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DB_FILE,
        "TEST": {"NAME": DB_FILE},
    },
    # The outbox's tests: the machine's PostgreSQL (trust auth); pytest-django creates the
    # test database when a test asks for "postgres" and drops it at the end.
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "TEST": {"NAME": f"tidings_django_test_{os.getpid()}"},
    },
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
TIDINGS = {
    "URL": os.environ.get("DJANGO_TEST_HUB_URL", "http://127.0.0.1:8001"),
    "API_KEY": "test-key",
    "TOKEN_HMAC_SECRET_KEY": "tests-only-hmac-secret-of-32-bytes-or-more",
    "HOOKS": ["notices.realtime"],
}
LOGIN_URL = "/accounts/login/"
