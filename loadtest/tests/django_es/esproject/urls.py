"""URL map: SSE via django_eventstream's `events` view, plus the test endpoints."""

from django.urls import path
from django_eventstream.views import events

from . import views

urlpatterns = [
    path("events/<str:channel>/", events),  # one channel, from the path
    path("events/", events),  # ?channel=a&channel=b
    path("send/<str:channel>/", views.send),
    path("page/<str:channel>/", views.page),  # a browser EventSource page
    path("beacon/", views.beacon),  # where that page reports each event
]
