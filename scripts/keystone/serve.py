"""Serves Keystone's public WSGI application on loopback for Neutrino's tests.

Run by run-keystone.sh with the virtualenv's interpreter and
OS_KEYSTONE_CONFIG_FILES pointing at the generated keystone.conf:

    python serve.py --port PORT --ready FILE --admin-password PW

It listens on 127.0.0.1:PORT (stdlib wsgiref, one thread per request), then
makes sure the test accounts exist by talking to itself over the ordinary
identity API with an admin token:

    project "service" + user "neutrino" with role "service"
    project "demo"    + user "demo"     with role "member"
    project "alt"     + user "alt"      with role "member"

Passwords come from the environment (KEYSTONE_SERVICE_PASSWORD,
KEYSTONE_DEMO_PASSWORD, KEYSTONE_ALT_PASSWORD; defaults below). Once that is
done it writes FILE (atomically) with the URL and the ids of everything, which
is the signal that Keystone is ready, and serves until killed -- or, when
KEYSTONE_EXIT_WITH_PID names a process, until that process is gone (so a test
that dies without cleaning up does not leave Keystone behind).
"""

import argparse
import json
import os
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
        sys.stderr.write("keystone: %s\n" % (format % args))


def call(base, method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return e.code, dict(e.headers), parsed


def must(result, *ok):
    status, _, body = result
    if status not in ok:
        raise SystemExit("keystone provisioning failed: HTTP %s: %s" % (status, body))
    return body


def password_token(base, user, password, project):
    status, headers, body = call(
        base,
        "POST",
        "/auth/tokens",
        body={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        },
    )
    if status != 201:
        raise SystemExit("keystone: cannot get a token for %s: HTTP %s: %s" % (user, status, body))
    return headers.get("X-Subject-Token"), body["token"]


def find_one(base, token, collection, name):
    body = must(call(base, "GET", "/%s?name=%s&domain_id=default" % (collection, name), token), 200)
    items = body[collection]
    return items[0] if items else None


def ensure_project(base, token, name):
    found = find_one(base, token, "projects", name)
    if found:
        return found["id"]
    body = must(
        call(base, "POST", "/projects", token, {"project": {"name": name, "domain_id": "default"}}),
        201,
    )
    return body["project"]["id"]


def ensure_user(base, token, name, password, project_id):
    found = find_one(base, token, "users", name)
    if found:
        # Keep the password in line with what this run was told.
        must(call(base, "PATCH", "/users/" + found["id"], token, {"user": {"password": password}}), 200)
        return found["id"]
    user = {"name": name, "domain_id": "default", "password": password, "default_project_id": project_id}
    return must(call(base, "POST", "/users", token, {"user": user}), 201)["user"]["id"]


def role_id(base, token, name):
    body = must(call(base, "GET", "/roles?name=" + name, token), 200)
    if not body["roles"]:
        raise SystemExit("keystone: role %s does not exist (did bootstrap run?)" % name)
    return body["roles"][0]["id"]


def provision(base, admin_password):
    admin_token, admin = password_token(base, "admin", admin_password, "admin")
    accounts = {
        "admin": {
            "user_id": admin["user"]["id"],
            "password": admin_password,
            "project": "admin",
            "project_id": admin["project"]["id"],
            "role": "admin",
        }
    }
    wanted = [
        ("neutrino", "service", "service", os.environ.get("KEYSTONE_SERVICE_PASSWORD", "neutrino-secret")),
        ("demo", "demo", "member", os.environ.get("KEYSTONE_DEMO_PASSWORD", "demo-secret")),
        ("alt", "alt", "member", os.environ.get("KEYSTONE_ALT_PASSWORD", "alt-secret")),
    ]
    for user, project, role, password in wanted:
        project_id = ensure_project(base, admin_token, project)
        user_id = ensure_user(base, admin_token, user, password, project_id)
        rid = role_id(base, admin_token, role)
        path = "/projects/%s/users/%s/roles/%s" % (project_id, user_id, rid)
        must(call(base, "PUT", path, admin_token), 204)
        accounts[user] = {
            "user_id": user_id,
            "password": password,
            "project": project,
            "project_id": project_id,
            "role": role,
        }
    # Prove every account can log in before saying we are ready.
    for user, a in accounts.items():
        password_token(base, user, a["password"], a["project"])
    return accounts


def exit_with(pid):
    """Ends this process once process `pid` no longer exists."""

    def watch():
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass
            time.sleep(1)

    threading.Thread(target=watch, name="exit-with", daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready", required=True, help="file written once Keystone is ready")
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--token-expiration", type=int, default=None)
    args = parser.parse_args()
    # Keystone's configuration loader reads sys.argv too: hide ours from it.
    del sys.argv[1:]
    watched = os.environ.get("KEYSTONE_EXIT_WITH_PID", "").strip()
    if watched:
        exit_with(int(watched))

    from keystone.server.wsgi import initialize_public_application

    app = initialize_public_application()
    httpd = make_server("127.0.0.1", args.port, app, server_class=ThreadingServer, handler_class=QuietHandler)
    base = "http://127.0.0.1:%d/v3" % args.port
    thread = threading.Thread(target=httpd.serve_forever, name="wsgi", daemon=True)
    thread.start()
    try:
        accounts = provision(base, args.admin_password)
    except BaseException:
        httpd.shutdown()
        raise
    ready = {
        "url": base,
        "port": args.port,
        "pid": os.getpid(),
        "token_expiration": args.token_expiration,
        "accounts": accounts,
    }
    tmp = args.ready + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ready, f, indent=2)
    os.replace(tmp, args.ready)
    print("keystone ready on %s" % base, flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
