"""URL map: SSE via django_eventstream's `events` view, plus the test publish endpoint."""

from django.urls import path
from django_eventstream.views import events

from . import views

urlpatterns = [
    path("events/<str:channel>/", events),  # one channel, from the path
    path("events/", events),  # ?channel=a&channel=b
    path("send/<str:channel>/", views.send),
]
