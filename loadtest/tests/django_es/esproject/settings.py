"""Settings of the django-eventstream e2e backend.

Environment:
  GRIP_URL         publish/control URL of the GRIP proxy (default http://127.0.0.1:5561)
  GRIP_VERIFY_KEY  optional; if set, only requests whose Grip-Sig verifies with it count as proxied
                   (otherwise any Grip-Sig header makes a request "proxied", django-grip's default)
  ES_DB            SQLite file for the event log (default: a fresh file in the temp dir)
"""

import os
import tempfile

SECRET_KEY = "tack-e2e-django-eventstream-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_eventstream",
]

MIDDLEWARE = [
    "django_grip.GripMiddleware",
    "esproject.views.QueryUserMiddleware",
]

ROOT_URLCONF = "esproject.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ES_DB")
        or os.path.join(tempfile.mkdtemp(prefix="django-es-"), "events.sqlite3"),
        # IMMEDIATE serialises concurrent send_event() writers instead of failing with "locked".
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

GRIP_URL = os.environ.get("GRIP_URL", "http://127.0.0.1:5561")
if os.environ.get("GRIP_VERIFY_KEY"):
    # Not GRIP_VERIFY_KEY: django-grip 3.5.2 evaluates `entry.get("verify_key", entry["key"])`,
    # so a proxy entry without a `key` raises KeyError (a 500 on every signed request). The
    # entry is spelled out instead, with `key` None (no publish auth) beside `verify_key`. Only
    # GRIP_PROXIES is set: django-grip appends GRIP_URL's entry to the GRIP_PROXIES list itself
    # on every request, so setting both would grow it without end.
    from gripcontrol import parse_grip_uri

    _proxy = parse_grip_uri(GRIP_URL)
    _proxy.setdefault("key", None)
    _proxy["verify_key"] = os.environ["GRIP_VERIFY_KEY"]
    GRIP_PROXIES = [_proxy]
    del GRIP_URL

EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"ts": {"format": "%(asctime)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "ts"}},
    "loggers": {"django.server": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}
