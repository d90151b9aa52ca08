"""Settings of the example Django project served by webcluster (docs/examples/README.md).

Production-like on purpose (DEBUG off, so Django serves no static files itself: webcluster's ``--static``
does). Paths that a deployment chooses come from the environment:

- ``EXAMPLE_DB``: the SQLite file (default: ``db.sqlite3`` beside manage.py);
- ``EXAMPLE_STATIC_ROOT``: where ``collectstatic`` puts the files (default: ``staticfiles/``);
- ``DJANGO_SECRET_KEY``: the secret key (a development key otherwise; set a real one in production).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret-change-me-in-production")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Relative, so Django prefixes it with SCRIPT_NAME: under --root-path /app the pages link
# /app/static/..., and webcluster needs --static /app/static=DIR (README, "Django").
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("EXAMPLE_STATIC_ROOT", str(BASE_DIR / "staticfiles"))

DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # bigger uploads stream to a temporary file
