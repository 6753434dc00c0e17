#!/usr/bin/env python3
"""Launcher of the django-eventstream e2e backend.

Usage: serve.py [PORT]   (or env ES_PORT; 0 = pick a free port; default 0)

Runs migrations on the SQLite DB (env ES_DB), binds 127.0.0.1:PORT with Django's threaded
WSGI server, then prints exactly one line `READY <port>` to stdout (flushed) and serves until
killed. Django's request log goes to stderr. Re-executes itself once with PYTHONHASHSEED=0 so
that multi-channel event ids (built from a set of channels) have the same order in every run.
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "esproject.settings")


def main():
    import django
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ES_PORT", "0"))
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    app = get_wsgi_application()

    class Server(ThreadedWSGIServer):
        request_queue_size = 256  # Django's default backlog of 10 is too small for fan-out tests

    server = Server(("127.0.0.1", port), WSGIRequestHandler, allow_reuse_address=True)
    server.set_app(app)
    print("READY %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
