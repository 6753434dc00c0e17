"""Minimal Django project around django-eventstream, used as a GRIP backend by tack's e2e tests."""
