"""Reload order (issue 10): reloads run one at a time and the newest file wins. Three config edits 25 ms apart, each
followed by SIGHUP, the first slow to build (a large users file): the gateway must end up serving the third edit.
Before the fix the three reloads overlapped and the slow first one installed last, 3 times out of 3."""
from __future__ import annotations

import json
import os
import signal
import time

import bcrypt
import requests

from test_reload import log_lines, rewrite, wait_for

BIG_USERS = 60_000
# Longer than the slow reload takes (about 1-2 s for BIG_USERS in a debug build) and than the file watcher's poll.
QUIET_SECONDS = 5.0


def write_big_htpasswd(path: str):
    """An htpasswd file with many users sharing one cheap hash: slow to parse and validate, not to write."""
    line_hash = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4)).decode()
    with open(path, "w") as f:
        f.writelines(f"user{i}:{line_hash}\n" for i in range(BIG_USERS))


def marker_config(base: dict, edit: int, users_file: str) -> dict:
    config = json.loads(json.dumps(base))
    config["token_service"]["users_file"] = users_file
    config["routes"].insert(0, {"path_prefix": f"/edit{edit}", "upstream": "app", "auth": "none"})
    return config


def status(gw, path: str) -> int:
    return requests.get(gw.url(path), timeout=10).status_code


def test_the_newest_edit_wins_over_a_slow_older_reload(make_service):
    svc = make_service("reload-order")
    gw = svc.gw
    write_big_htpasswd(os.path.join(gw.workdir, "big-users.htpasswd"))
    base = json.loads(json.dumps(gw.config))
    reloaded_before = sum("configuration reloaded" in l for l in log_lines(gw))

    for edit, users in ((1, "big-users.htpasswd"), (2, "users.json"), (3, "users.json")):
        rewrite(gw, marker_config(base, edit, users))
        gw.proc.send_signal(signal.SIGHUP)
        time.sleep(0.025)

    # Serialised: the slow first reload, then one coalesced reload of the newest file. Overlapping (the bug): the two
    # quick reloads, then the slow one. Either way at least two, then quiet once the slow one is done.
    def reloads() -> int:
        return sum("configuration reloaded" in l for l in log_lines(gw)) - reloaded_before

    wait_for(lambda: reloads() >= 2, timeout=60, what="the reloads")
    quiet_since, seen = time.monotonic(), reloads()
    while time.monotonic() - quiet_since < QUIET_SECONDS:
        time.sleep(0.1)
        if reloads() != seen:
            quiet_since, seen = time.monotonic(), reloads()
    # Edit 1's route gone (the catch-all route asks for a token), edit 3's served.
    assert status(gw, "/edit3/x") == 200
    assert status(gw, "/edit1/x") == 401
    assert status(gw, "/edit2/x") == 401
    assert gw.alive()
