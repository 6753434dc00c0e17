"""Test endpoints of the django-eventstream e2e backend.

- QueryUserMiddleware: `?user=NAME` (or header `X-User: NAME`) logs the request in as Django
  user NAME (created on first use), so django-eventstream puts that user's id into the GRIP
  `user` meta, which Pushpin's skip-users filter compares against publish meta `skip_users`.
- send(): `POST /send/<channel>/?n=COUNT[&skip=alice,bob][&tag=T][&async=1]` calls
  django_eventstream.send_event(channel, "message", {"n": i, "pct": "100%"[, "tag": T]})
  for i = 1..COUNT (publishing blocking unless async=1) and answers JSON
  {"channel", "sent", "last_id", "skip_user_ids"}.
- page(): `GET /page/<channel>/` is an HTML page whose `EventSource` reads `/events/<channel>/`
  (same origin: through the proxy) and reports every event it gets, numbered, as
  `GET /beacon/?seq=N&type=T&id=ID&data=DATA` (answered 204 by beacon()): the request log
  is the browser's transcript.
"""

import json
from urllib.parse import quote

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse, HttpResponseNotAllowed
from django_eventstream import send_event
from django_eventstream.utils import get_storage


def _user(name):
    return get_user_model().objects.get_or_create(username=name)[0]


class QueryUserMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/events/") and not request.grip.proxied:
            body = "GRIP proxy required (no Grip-Sig header)\n"
            return HttpResponse(body, status=501, content_type="text/plain")
        name = request.GET.get("user") or request.headers.get("X-User")
        request.user = _user(name) if name else AnonymousUser()
        return self.get_response(request)


def send(request, channel):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    count = int(request.GET.get("n", "1"))
    skip = [str(_user(u).pk) for u in request.GET.get("skip", "").split(",") if u]
    tag = request.GET.get("tag")
    blocking = request.GET.get("async") != "1"
    for i in range(1, count + 1):
        data = {"n": i, "pct": "100%"}
        if tag is not None:
            data["tag"] = tag
        send_event(channel, "message", data, skip_user_ids=skip, async_publish=not blocking)
    body = {
        "channel": channel,
        "sent": count,
        "last_id": get_storage().get_current_id(channel),
        "skip_user_ids": skip,
    }
    return HttpResponse(json.dumps(body) + "\n", content_type="application/json")


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tack e2e EventSource</title>
<script>
let seq = 0;
function report(type, e) {
  const q = new URLSearchParams({seq: seq++, type: type, id: e.lastEventId || "", data: e.data || ""});
  fetch("/beacon/?" + q.toString());
}
const es = new EventSource("/events/CHANNEL/");
es.addEventListener("stream-open", (e) => report("stream-open", e));
es.addEventListener("message", (e) => report("message", e));
es.addEventListener("error", () => report("error", {}));
</script>
"""


def page(request, channel):
    body = PAGE.replace("CHANNEL", quote(channel, safe=""))
    return HttpResponse(body, content_type="text/html; charset=utf-8")


def beacon(request):
    return HttpResponse(status=204)
