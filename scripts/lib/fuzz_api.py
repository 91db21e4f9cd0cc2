"""Helpers of scripts/fuzz-api, run with the fuzzing virtualenv's Python.

    fuzz_api.py free-port                     print a free loopback TCP port
    fuzz_api.py wait-ready BASE_URL SECS      wait until BASE_URL/readyz is 200
    fuzz_api.py application BASE_URL FILE     create an application with the
                                              account's Basic credentials (read
                                              from FILE, `dispatch account create`
                                              output) and print its JSON
    fuzz_api.py basic FILE                    print `api_key:api_secret`
    fuzz_api.py token FILE                    print a Bearer JWT of the
                                              application whose create answer
                                              is in FILE

Only the standard library, PyJWT and cryptography: no curl or jq needed.
"""

import base64
import json
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid

import jwt


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base_url, secs):
    deadline = time.monotonic() + float(secs)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
                last = f"status {r.status}"
        except urllib.error.HTTPError as e:
            last = f"status {e.code}: {e.read()[:200]!r}"
        except OSError as e:
            last = str(e)
        # Polling a server that is starting up: there is no event to wait on.
        time.sleep(0.2)
    sys.exit(f"ingest at {base_url} not ready after {secs} s ({last})")


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def basic(path):
    account = load(path)
    return f"{account['api_key']}:{account['api_secret']}"


def application(base_url, account_file):
    credentials = base64.b64encode(basic(account_file).encode()).decode()
    body = json.dumps({
        "name": "fuzz",
        "capabilities": {"messages": {"webhooks": {
            "status_url": {"address": "https://example.com/status", "http_method": "POST"},
        }}},
    }).encode()
    request = urllib.request.Request(
        base_url + "/v2/applications", data=body, method="POST",
        headers={"Authorization": "Basic " + credentials,
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        sys.exit(f"creating the application failed: {e.code} {e.read()[:500]!r}")


def token(app_file):
    app = load(app_file)
    claims = {"application_id": app["id"], "iat": int(time.time()), "jti": str(uuid.uuid4())}
    return jwt.encode(claims, app["keys"]["private_key"], algorithm="RS256")


def main(argv):
    match argv:
        case ["free-port"]:
            print(free_port())
        case ["wait-ready", base_url, secs]:
            wait_ready(base_url, secs)
        case ["application", base_url, account_file]:
            print(application(base_url, account_file))
        case ["basic", account_file]:
            print(basic(account_file))
        case ["token", app_file]:
            print(token(app_file))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
