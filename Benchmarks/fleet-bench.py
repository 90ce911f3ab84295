#!/usr/bin/env python3
"""Fleet benchmark (issue 9, DESIGN §9): refreshes per second on PostgreSQL with three replicas beside SQLite with
one, in one run, and how long a revocation takes to reach the other replicas and a verify-only gateway that follows
the revocation feed.

Not a test: it prints numbers and ratios and never fails on timing.

    Benchmarks/fleet-bench.py [--build] [--binary PATH] [--clients 16] [--sessions 8] [--rounds 4] [--seconds 8]
                              [--samples 300] [--feed-readers 1000] [--pool-size N] [--no-pin] [--sql STATEMENT]

- The release binary is used (built first when missing, or with --build).
- PostgreSQL: a throwaway server from Tests/e2e/postgres.py (fsync off, like the end-to-end tests), with
  pg_stat_statements loaded so the run can say how many statements and transactions one refresh costs.
- Setups: A = three replicas on that database (one token service: same issuer, key-encryption key and feed
  secret), B = one gateway on SQLite. Both run for the whole benchmark; rounds alternate A, B, A, B, ... so that
  the machine's noise (2 shared cores) hits both; the ratio is taken over the sums.
- Pinning (default): every server process (gateways, PostgreSQL) on CPU 0, the clients on CPU 1, so the two setups
  get the same server CPU and the clients do not compete with them. Client CPU is printed: near 1.0 core would mean
  the client is the limit.
- Each client is a process with one keep-alive connection (to replica `i mod 3` in setup A) and `--sessions`
  sessions logged in beforehand; it refreshes them in turn, so consecutive refreshes are of different sessions.
- Propagation: for each sample, log in on replica 1, use the access token on replicas 2 and 3 and on the follower
  (a verify-only gateway, no store, following replica 2's feed), start polling the three in a tight loop, log out
  on replica 1, and note when each refuses the token (401). Delays count from the moment the logout's 204 arrived
  (0 when the token was already refused by then).
- Feed fan-out (--feed-readers): that many long polls held at once on replica 2's feed, then one logout: when each
  gets its answer, and what holding them cost replica 2.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import bcrypt

from benchlib import (Connection, GatewayProcess, ROOT, children_cpu_seconds, cpu_seconds, free_port, release_binary,
                      rss_kib)

sys.path.insert(0, os.path.join(ROOT, "Tests", "e2e"))
from postgres import PostgresServer  # noqa: E402  (the end-to-end suite's throwaway server)

PASSWORD = "bench-password-1234"
USERS = 64
KEK = "fleet-bench-key-encryption-key-" + "k" * 40
FEED_SECRET = "fleet-bench-feed-secret-" + "f" * 40
SERVER_CPUS = "0"
CLIENT_CPU = 1


# ------------------------------------------------------------------------------------------------------------------
# configurations


def write_users(directory: str, password_hash: str):
    import json
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "users.json"), "w") as f:
        json.dump({"users": [{"username": f"user{i}", "password_hash": password_hash, "scopes": ["read"]}
                             for i in range(USERS)]}, f)


def gateway_config(port: int, issuer: str, store: dict, dead_port: int) -> dict:
    """A token service on `store`. The one route's upstream is a closed port: an accepted token answers 502, a
    refused one 401, so polling needs no upstream process."""
    return {
        "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{dead_port}", "connect_timeout_ms": 1000}},
        "routes": [{"path_prefix": "/", "upstream": "app"}],
        "auth": {"realm": "api", "audiences": ["api"], "leeway_seconds": 0},
        "token_service": {
            "issuer": issuer, "audience": "api", "users_file": "users.json",
            "signing": {"algorithm": "ES256", "key_encryption_key": KEK} if store["type"] == "postgres"
            else {"algorithm": "ES256", "key_dir": "keys"},
            "login_limits": {"per_username": 1000000, "per_address": 1000000},
            "revocations_feed_token": FEED_SECRET,
        },
        "store": store,
        "log": {"level": "warning", "access_log": False},
    }


def follower_config(issuer: str, feed_base: str, dead_port: int) -> dict:
    return {
        "listen": f"127.0.0.1:{free_port()}", "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{dead_port}", "connect_timeout_ms": 1000}},
        "routes": [{"path_prefix": "/", "upstream": "app"}],
        "auth": {"realm": "api", "audiences": ["api"], "leeway_seconds": 0},
        "issuers": [{"issuer": issuer, "jwks_uri": feed_base + "/.well-known/jwks.json",
                     "revocations_uri": feed_base + "/auth/revocations", "revocations_token": FEED_SECRET}],
        "log": {"level": "warning", "access_log": False},
    }


# ------------------------------------------------------------------------------------------------------------------
# refresh throughput


def pin_client():
    if CLIENT_CPU < 0:
        return
    try:
        os.sched_setaffinity(0, {CLIENT_CPU})
    except OSError:
        pass


def login_worker(args) -> list[str]:
    port, first_user, count = args
    pin_client()
    conn = Connection(port)
    tokens = []
    for k in range(count):
        status, body = conn.form("/auth/login", {"username": f"user{(first_user + k) % USERS}", "password": PASSWORD})
        assert status == 200, (status, body)
        tokens.append(body["refresh_token"])
    conn.close()
    return tokens


def refresh_worker(args) -> dict:
    """Refreshes its sessions in turn from `start` for `seconds`; returns the sessions' new refresh tokens."""
    port, tokens, start, seconds = args
    pin_client()
    conn = Connection(port)
    conn.request("GET", "/healthz-warm")  # the connection is open before the clock starts
    tokens = list(tokens)
    count, errors, latencies, i = 0, 0, [], 0
    while time.time() < start:
        time.sleep(0.001)
    cpu0 = time.process_time()
    end = time.perf_counter() + (start + seconds - time.time())
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        status, body = conn.form("/auth/token", {"grant_type": "refresh_token", "refresh_token": tokens[i]})
        latencies.append(time.perf_counter() - t0)
        if status == 200:
            tokens[i] = body["refresh_token"]
            count += 1
        else:
            errors += 1
        i = (i + 1) % len(tokens)
    cpu = time.process_time() - cpu0
    conn.close()
    return {"tokens": tokens, "count": count, "errors": errors, "latencies": latencies, "cpu": cpu}


class Setup:
    def __init__(self, name: str, ports: list[int], server_cpu):
        """`server_cpu()`: CPU seconds so far of the setup's server processes, by label."""
        self.name, self.ports, self.server_cpu = name, ports, server_cpu
        self.sessions: list[list[str]] = []
        self.rounds: list[dict] = []


def login_all(pool, setup: Setup, clients: int, sessions: int):
    jobs = [(setup.ports[c % len(setup.ports)], c * sessions, sessions) for c in range(clients)]
    setup.sessions = pool.map(login_worker, jobs, chunksize=1)


def refresh_round(pool, setup: Setup, seconds: float) -> dict:
    start = time.time() + 0.5
    jobs = [(setup.ports[c % len(setup.ports)], setup.sessions[c], start, seconds) for c in range(len(setup.sessions))]
    async_result = pool.map_async(refresh_worker, jobs, chunksize=1)
    # Server CPU over the measured window only (not the 0.5 s start-up of the clients).
    time.sleep(max(0.0, start - time.time()))
    before = setup.server_cpu()
    results = async_result.get()
    after = setup.server_cpu()
    setup.sessions = [r["tokens"] for r in results]
    latencies = sorted(x for r in results for x in r["latencies"])
    round_ = {
        "count": sum(r["count"] for r in results), "errors": sum(r["errors"] for r in results),
        "seconds": seconds, "latencies": latencies,
        "client_cpu": sum(r["cpu"] for r in results) / seconds,
        "server_cpu": {k: (after[k] - before[k]) / seconds for k in after},
    }
    setup.rounds.append(round_)
    return round_


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


# ------------------------------------------------------------------------------------------------------------------
# revocation propagation


class Poller(threading.Thread):
    """Polls one gateway with the current token in a tight loop until it is refused; records when."""

    def __init__(self, name: str, port: int):
        super().__init__(daemon=True)
        self.name_, self.conn = name, Connection(port)
        self.go, self.done = threading.Event(), threading.Event()
        self.token, self.refused_at, self.polls, self.stop = "", 0.0, 0, False

    def arm(self, token: str):
        self.token, self.refused_at, self.polls = token, 0.0, 0
        self.done.clear()
        self.go.set()

    def run(self):
        while True:
            self.go.wait()
            self.go.clear()
            if self.stop:
                return
            header = f"Authorization: Bearer {self.token}\r\n"
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:
                status, body = self.conn.request("GET", "/api/items", headers=header)
                self.polls += 1
                if status == 401:
                    self.refused_at = time.perf_counter()
                    assert b"token_revoked" in body, body
                    break
            self.done.set()


def propagation(replicas: list[int], follower: int, samples: int) -> dict[str, list[float]]:
    r1 = Connection(replicas[0])
    probes = {"replica 2": Connection(replicas[1]), "replica 3": Connection(replicas[2]),
              "follower": Connection(follower)}
    pollers = {name: Poller(name, port) for name, port in
               [("replica 2", replicas[1]), ("replica 3", replicas[2]), ("follower", follower)]}
    for p in pollers.values():
        p.start()
    delays: dict[str, list[float]] = {name: [] for name in pollers}
    delays["logout"] = []
    missed = 0
    try:
        for k in range(samples):
            status, tokens = r1.form("/auth/login", {"username": f"user{k % USERS}", "password": PASSWORD})
            assert status == 200, tokens
            access = tokens["access_token"]
            header = f"Authorization: Bearer {access}\r\n"
            # Accepted everywhere first (and so in each gateway's verified-token cache).
            for name, conn in probes.items():
                status, body = conn.request("GET", "/api/items", headers=header)
                assert status != 401, (name, body)
            # The pollers are already polling when the logout goes out, so a delay never includes a thread's
            # wake-up; they slow the logout call a little (one Python process).
            for p in pollers.values():
                p.arm(access)
            sent = time.perf_counter()
            status, body = r1.request("POST", "/auth/logout", headers=header)
            answered = time.perf_counter()
            assert status == 204, (status, body)
            delays["logout"].append(answered - sent)
            for name, p in pollers.items():
                p.done.wait(10)
                if not p.refused_at:
                    missed += 1
                    continue
                delays[name].append(max(0.0, p.refused_at - answered))
    finally:
        for p in pollers.values():
            p.stop = True
            p.go.set()
    if missed:
        print(f"  WARNING: {missed} polls never saw the revocation within 5 s")
    return delays


def feed_fanout(replica1: int, serving: GatewayProcess, readers: int) -> dict:
    """`readers` long polls held on `serving`'s feed at once (as that many verify-only sidecars would hold them),
    then one logout on replica 1: when does each held poll get its answer?"""
    import json
    import selectors
    import socket
    auth = f"Authorization: Bearer {FEED_SECRET}\r\n"
    status, body = Connection(serving.port).request("GET", "/auth/revocations?after=0&wait=0", headers=auth)
    assert status == 200, body
    after = json.loads(body)["next"]
    rss_before, cpu_before = rss_kib(serving.pid), cpu_seconds(serving.pid)
    request = (f"GET /auth/revocations?after={after}&wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").encode()
    sel = selectors.DefaultSelector()
    sockets = []
    for _ in range(readers):
        s = socket.create_connection(("127.0.0.1", serving.port))
        s.sendall(request)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [b""])
        sockets.append(s)
    time.sleep(2)  # every poll is held by now
    rss_held = rss_kib(serving.pid)
    conn = Connection(replica1)
    status, tokens = conn.form("/auth/login", {"username": "user0", "password": PASSWORD})
    assert status == 200, tokens
    status, _ = conn.request("POST", "/auth/logout", headers=f"Authorization: Bearer {tokens['access_token']}\r\n")
    answered_at = time.perf_counter()
    assert status == 204
    delays, statuses, pending = [], {}, len(sockets)
    deadline = time.perf_counter() + 10
    while pending and time.perf_counter() < deadline:
        for key, _ in sel.select(0.5):
            data = key.fileobj.recv(65536)
            key.data[0] += data
            if b"\r\n\r\n" in key.data[0] or not data:
                head = key.data[0].split(b"\r\n", 1)[0]
                code = head.split(b" ")[1].decode() if head.count(b" ") else "closed"
                statuses[code] = statuses.get(code, 0) + 1
                delays.append(max(0.0, time.perf_counter() - answered_at))
                sel.unregister(key.fileobj)
                pending -= 1
    for s in sockets:
        s.close()
    return {"readers": readers, "delays": sorted(delays), "statuses": statuses, "unanswered": pending,
            "rss_kib_per_reader": (rss_held - rss_before) / readers, "cpu": cpu_seconds(serving.pid) - cpu_before}


# ------------------------------------------------------------------------------------------------------------------
# PostgreSQL statistics


def pg_counters(db) -> dict:
    xact = db.sql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
    calls = db.sql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                   "WHERE d.datname = current_database()")
    return {"transactions": int(xact), "statements": int(calls)}


def top_statements(db, limit: int = 8) -> list[tuple[int, float, str]]:
    rows = db.sql("SELECT calls, round(mean_exec_time::numeric, 3), left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
                  "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                  f"WHERE d.datname = current_database() ORDER BY calls DESC LIMIT {limit}")
    out = []
    for line in rows.splitlines():
        calls, mean, query = line.split("|", 2)
        out.append((int(calls), float(mean), query))
    return out


# ------------------------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", help="gateway binary (default: the release build)")
    parser.add_argument("--build", action="store_true", help="run swift build -c release first")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=8, help="sessions per client")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per setup, alternated")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--samples", type=int, default=300, help="revocation propagation samples")
    parser.add_argument("--feed-readers", type=int, default=1000,
                        help="long polls held at once on one replica's feed (0: skip)")
    parser.add_argument("--pool-size", type=int, default=None, help="store.pool_size of the replicas")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers to CPU 0 and clients to CPU 1")
    parser.add_argument("--db-cpu", type=int, default=None,
                        help="pin PostgreSQL to this CPU instead of the gateways' (a database on its own machine, as "
                             "deployed); e.g. 1, beside the clients")
    parser.add_argument("--sql", action="append", default=[],
                        help="SQL to run on the database once the replicas have created the schema (experiments)")
    parser.add_argument("--skip-refresh", action="store_true")
    parser.add_argument("--skip-propagation", action="store_true")
    args = parser.parse_args()
    binary = release_binary(args.binary, args.build)
    global SERVER_CPUS, CLIENT_CPU
    if args.no_pin:
        SERVER_CPUS, CLIENT_CPU = None, -1
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()

    work = tempfile.mkdtemp(prefix="portcullis-fleet-bench-")
    server = PostgresServer()
    processes: list[GatewayProcess] = []
    pool = None
    try:
        # pg_stat_statements needs a restart to load; the data stays.
        server.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        server.stop()
        server.start()
        db = server.database()
        db.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        postmaster = int(open(os.path.join(server.data_dir, "postmaster.pid")).readline())
        if args.db_cpu is not None or SERVER_CPUS:
            # Backends are forked from the postmaster and inherit its CPU set.
            os.sched_setaffinity(postmaster, {args.db_cpu if args.db_cpu is not None else int(SERVER_CPUS)})

        dead_port = free_port()
        store = db.store_config()
        if args.pool_size:
            store["pool_size"] = args.pool_size
        ports = [free_port() for _ in range(3)]
        issuer = f"http://127.0.0.1:{ports[0]}"
        replicas = []
        for i, port in enumerate(ports):
            directory = os.path.join(work, f"r{i + 1}")
            write_users(directory, password_hash)
            replicas.append(GatewayProcess(binary, directory, gateway_config(port, issuer, store, dead_port),
                                           SERVER_CPUS))
            processes.append(replicas[-1])
            # The first replica creates the schema and the first signing key; the others start after it.
            replicas[-1].wait("/readyz")
        for statement in args.sql:
            print(f"  sql: {statement} -> {db.sql(statement)!r}")
        sqlite_port = free_port()
        directory = os.path.join(work, "sqlite")
        write_users(directory, password_hash)
        single = GatewayProcess(binary, directory, gateway_config(
            sqlite_port, f"http://127.0.0.1:{sqlite_port}", {"type": "sqlite", "path": "data/portcullis.db"},
            dead_port), SERVER_CPUS).wait("/readyz")
        processes.append(single)
        follower = GatewayProcess(binary, os.path.join(work, "follower"),
                                  follower_config(issuer, f"http://127.0.0.1:{ports[1]}", dead_port), SERVER_CPUS)
        processes.append(follower)
        follower.wait("/readyz")

        fleet = Setup("postgres x3", ports, lambda: {
            "gateways": sum(cpu_seconds(r.pid) for r in replicas),
            "postgres": children_cpu_seconds(postmaster)})
        sqlite = Setup("sqlite x1", [sqlite_port], lambda: {"gateways": cpu_seconds(single.pid)})

        if not args.skip_refresh:
            pool = multiprocessing.Pool(args.clients)
            for setup in (fleet, sqlite):
                login_all(pool, setup, args.clients, args.sessions)
            for setup in (fleet, sqlite):  # warm-up: connections, prepared statements, caches
                refresh_round(pool, setup, 1)
                setup.rounds.clear()
            counters = []
            for r in range(args.rounds):
                for setup in (fleet, sqlite) if r % 2 == 0 else (sqlite, fleet):
                    before = pg_counters(db) if setup is fleet else None
                    result = refresh_round(pool, setup, args.seconds)
                    if before:
                        after = pg_counters(db)
                        counters.append({k: after[k] - before[k] for k in after} | {"count": result["count"]})
                    print(f"  round {r + 1} {setup.name:12} {result['count'] / args.seconds:8.0f} refreshes/s  "
                          f"errors {result['errors']}  client CPU {result['client_cpu']:.2f} core  server CPU "
                          + ", ".join(f"{k} {v:.2f}" for k, v in result["server_cpu"].items()), flush=True)
            pool.close()
            pool.join()
            pool = None

        if not args.skip_propagation:
            delays = propagation(ports, follower.port, args.samples)
        if args.feed_readers:
            fanout = feed_fanout(ports[0], replicas[1], args.feed_readers)
            connections = db.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")

        # ---- report
        print()
        print(f"fleet-bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, release build "
              f"{os.path.relpath(binary, ROOT)}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
              + ("servers on CPU 0, clients on CPU 1" if SERVER_CPUS else "no pinning")
              + (f", PostgreSQL on CPU {args.db_cpu}" if args.db_cpu is not None else ""))
        if not args.skip_refresh:
            print(f"\nrefresh_token grant: {args.clients} clients x {args.sessions} sessions, "
                  f"{args.rounds} alternated rounds x {args.seconds:.0f} s per setup, "
                  f"pool_size {store.get('pool_size', 4)}")
            print(f"  {'setup':12} {'refreshes/s':>12} {'rounds (per s)':>30} {'p50 ms':>7} {'p99 ms':>7} "
                  f"{'errors':>6} {'client CPU':>10}  server CPU (cores)")
            totals = {}
            for setup in (fleet, sqlite):
                count = sum(r["count"] for r in setup.rounds)
                seconds = sum(r["seconds"] for r in setup.rounds)
                latencies = sorted(x for r in setup.rounds for x in r["latencies"])
                totals[setup.name] = count / seconds
                server_cpu = {k: statistics.mean(r["server_cpu"][k] for r in setup.rounds)
                              for k in setup.rounds[0]["server_cpu"]}
                per_round = " ".join(f"{r['count'] / r['seconds']:.0f}" for r in setup.rounds)
                print(f"  {setup.name:12} {count / seconds:12.0f} {per_round:>30} "
                      f"{1000 * percentile(latencies, 0.5):7.2f} {1000 * percentile(latencies, 0.99):7.2f} "
                      f"{sum(r['errors'] for r in setup.rounds):6d} "
                      f"{max(r['client_cpu'] for r in setup.rounds):9.2f}  "
                      + ", ".join(f"{k} {v:.2f}" for k, v in server_cpu.items()))
            print(f"  postgres x3 / sqlite x1: {totals[fleet.name] / totals[sqlite.name]:.2f}x (target >= 0.5)")
            refreshes = sum(c["count"] for c in counters)
            print(f"  per refresh on PostgreSQL: {sum(c['statements'] for c in counters) / refreshes:.2f} statements, "
                  f"{sum(c['transactions'] for c in counters) / refreshes:.2f} transactions "
                  f"(pg_stat_statements / pg_stat_database over the measured rounds)")
            print("  most frequent statements (calls, mean ms):")
            for calls, mean, query in top_statements(db):
                print(f"    {calls:8d} {mean:7.3f}  {query}")
        if not args.skip_propagation:
            print(f"\nrevocation propagation: logout on replica 1, {args.samples} samples, from the logout's 204")
            print(f"  {'where':44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
            labels = {"replica 2": "replica 2 (LISTEN/NOTIFY)", "replica 3": "replica 3 (LISTEN/NOTIFY)",
                      "follower": "verify-only follower (replica 2's feed)", "logout": "(the logout call itself)"}
            for name, values in delays.items():
                values = sorted(values)
                print(f"  {labels[name]:44} {1000 * percentile(values, 0.5):8.2f} "
                      f"{1000 * percentile(values, 0.99):8.2f} {1000 * values[-1]:8.2f}")
        if args.feed_readers:
            d = fanout["delays"]
            print(f"\nfeed fan-out: {fanout['readers']} long polls held on replica 2's feed, one logout on replica 1")
            print(f"  answered {len(d)} ({fanout['statuses']}), unanswered after 10 s {fanout['unanswered']}; "
                  f"from the logout's 204: p50 {1000 * percentile(d, 0.5):.1f} ms, p99 {1000 * percentile(d, 0.99):.1f} ms, "
                  f"max {1000 * d[-1]:.1f} ms")
            print(f"  replica 2 while holding them: {fanout['rss_kib_per_reader']:.1f} KiB RSS per held poll, "
                  f"{fanout['cpu'] * 1000:.0f} ms CPU in all (connect, hold, answer)")
            print(f"  database connections of the whole run now (3 replicas, a follower, this script's psql): "
                  f"{connections}")
    finally:
        if pool is not None:
            pool.terminate()
        for p in processes:
            p.stop()
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
