#!/usr/bin/env bash
# DESIGN §8's comparison in one command: Portcullis beside nginx, HAProxy and Apache mod_auth_openidc through
# ../shared/peerbench, every server pinned to CPU 0 (SUT_CPUS) and every load generator to CPU 1 (WRK_CPUS), then one
# table and the ratio lines with PASS/MISS, all from this one run. Phases, in order:
#   floor  the libcurl floor (peerbench's floor.sh): Portcullis's front answering its own JWKS (token service on,
#          no upstream) and a bare libcurl multi client; floor = 1 / (1/front + 1/libcurl)
#   hot    bench.sh with nginx, haproxy, haproxy-es256, oidc-es256-jwks and Portcullis (one ES256 token reused,
#          verified-token cache on)
#   cold   bench.sh with TOKEN_POOL=256, nginx, haproxy-es256 and Portcullis with token_cache_entries 0
#   cpu    the floor and the hot path again in CPU time per request (user + system, from /proc): the front (as in
#          floor), peerbench's curl_client.c (its own CPU time), Portcullis proxying with the hot config, and the
#          upstream. The floor's halves run with the upstream on the other core, the hot run with it on the servers'
#          core, so req/s charges Portcullis with the upstream's work; CPU time compares like with like and moves much
#          less than req/s with the machine's other load (informational, not a DESIGN §8 line); and `openssl speed ecdsap256`
#          on the servers' core: one P-256 verification, which with the floor bounds the cache-off path
#   paced  Benchmarks/paced_client.c (open loop, evenly spaced requests, latency from each one's due time) at half of
#          nginx's req/s from the hot phase: Portcullis, nginx and the upstream alone (direct) at the same fixed rate,
#          in alternating rounds; p99 of each and Portcullis's p99 minus nginx's
#   idle   IDLE_CONNECTIONS (10,000) keep-alive connections, each idle after one request: RSS per connection of
#          Portcullis and, for reference, of nginx
# cpu, paced and idle run against `bench.sh serve` (the peerbench upstream and nginx proxy, Portcullis with the hot
# config); the nginx of the idle phase is a copy of peerbench's proxy config with room for the connections.
#
# Usage: Benchmarks/peerbench.sh [--report FILE]
#   Every result goes to RESULTS_DIR (default /tmp/portcullis-bench-<time>/): report.md (the table printed at the
#   end), floor/, hot/ and cold/ (peerbench results, summary.json), paced/, idle-*.json. --report copies report.md.
# Knobs (environment): ROUNDS, DURATION, WARMUP, COOLDOWN, CONNECTIONS pass through to bench.sh (and set the paced
#   phase's rounds, duration, warm-up and connections unless PACED_* say otherwise); FLOOR_DURATION (floor.sh's
#   seconds per half, default DURATION or 8); PHASES (default "floor hot cold cpu paced idle"); IDLE_CONNECTIONS;
#   PACED_RATE (instead of half of nginx's hot-phase req/s); COLD_TOKEN_POOL (256); HOT_TARGETS, COLD_TARGETS;
#   PORTCULLIS_BIN (a built binary: no build, no scripts/install-deps); PEERBENCH (the harness folder);
#   PEERBENCH_STATE (its keys and tokens, default /tmp/peerbench-state).
#   Smoke run: DURATION=2 ROUNDS=1 WARMUP=1 IDLE_CONNECTIONS=500 PORTCULLIS_BIN=.build/release/portcullis ...
# Installs the packages it needs (apt) and pyjwt/cryptography (pip). Only 127.0.0.1. Every process it starts is
# stopped at exit, by its pid or process group; peerbench's scripts stop theirs the same way.
set -euo pipefail
CALLER_PWD=$PWD   # --report and PORTCULLIS_BIN are relative to where the command was given
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERBENCH=${PEERBENCH:-$ROOT/../shared/peerbench}
PORT=${PORTCULLIS_BENCH_PORT:-18090}
FRONT_PORT=${FRONT_PORT:-18095}
IDLE_NGINX_PORT=${IDLE_NGINX_PORT:-18096}
PORT_UPSTREAM=${PORT_UPSTREAM:-18080}
PORT_NGINX=${PORT_NGINX:-18081}
export SUT_CPUS=${SUT_CPUS:-0} WRK_CPUS=${WRK_CPUS:-1}
PHASES=" ${PHASES:-floor hot cold cpu paced idle} "
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
COLD_TOKEN_POOL=${COLD_TOKEN_POOL:-256}
HOT_TARGETS=${HOT_TARGETS:-nginx haproxy haproxy-es256 oidc-es256-jwks}
COLD_TARGETS=${COLD_TARGETS:-nginx haproxy-es256}
FLOOR_DURATION=${FLOOR_DURATION:-${DURATION:-8}}
PACED_ROUNDS=${PACED_ROUNDS:-${ROUNDS:-3}}
PACED_DURATION=${PACED_DURATION:-${DURATION:-10}}
PACED_WARMUP=${PACED_WARMUP:-${WARMUP:-3}}
PACED_CONNECTIONS=${PACED_CONNECTIONS:-${CONNECTIONS:-64}}
OUT=$(cd "$CALLER_PWD" && realpath -m "${RESULTS_DIR:-/tmp/portcullis-bench-$(date -u +%Y%m%d-%H%M%S)}")
REPORT=
while [ $# -gt 0 ]; do
  case $1 in
    --report) REPORT=$(cd "$CALLER_PWD" && realpath -m "$2"); shift 2 ;;
    --report=*) REPORT=$(cd "$CALLER_PWD" && realpath -m "${1#--report=}"); shift ;;
    *) echo "usage: $0 [--report FILE]   (knobs: see the top of this file)" >&2; exit 2 ;;
  esac
done
has() { [[ "$PHASES" == *" $1 "* ]]; }
say() { printf '\n=== %s %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# --- what it needs ------------------------------------------------------------------------------------------------
if [ -z "${PORTCULLIS_BIN:-}" ]; then
  scripts/install-deps
  swift build -c release --product portcullis
  PORTCULLIS_BIN=$ROOT/.build/release/portcullis
fi
BIN=$(cd "$CALLER_PWD" && realpath "$PORTCULLIS_BIN")
[ -x "$BIN" ] || { echo "peerbench.sh: $BIN is not an executable" >&2; exit 1; }
need=()
for pkg in nginx-light wrk apache2 libapache2-mod-auth-openidc haproxy gcc libcurl4-openssl-dev \
           curl iproute2 util-linux time procps; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
python3 -c "import jwt, cryptography" 2>/dev/null || python3 -m pip install -q pyjwt cryptography

# 10,000 idle connections: the client's sockets in one process, the server's in another, each needs the room
fds=$((IDLE_CONNECTIONS + 1024))
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$fds" ] || ulimit -Hn "$fds" 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$fds" ]; then
  echo "peerbench.sh: ulimit -n is $(ulimit -n), $fds needed for IDLE_CONNECTIONS=$IDLE_CONNECTIONS" >&2; exit 1
fi

# peerbench's keys and tokens. Never inside the harness's folder: as root, bench.sh's own `-w` test passes on a folder
# that is read-only by its mode, and bench.sh would then write keys/ there and chmod the folder 755.
STATE=${PEERBENCH_STATE:-${TMPDIR:-/tmp}/peerbench-state}
export PEERBENCH_STATE=$STATE
KEYS=$STATE/keys
TOKEN_FILE=$KEYS/tokens/es256-valid.jwt
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
chmod 755 "$WORK"   # nginx's workers (nobody) read under it
SERVE_PID=
SERVE_RUNDIR=$WORK/serve-run
IDLE_NGINX_PGID=
CPU_FRONT_PGID=
stop_serve() {  # bench.sh serve stops its servers on SIGTERM; its pids file is the fallback
  [ -n "$SERVE_PID" ] || return 0
  kill -TERM "$SERVE_PID" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -KILL -- "-$SERVE_PID" 2>/dev/null || true
    while read -r pid _; do kill -TERM -- "-$pid" 2>/dev/null || true; done <"$SERVE_RUNDIR/pids" 2>/dev/null || true
  fi
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=
}
stop_group() {  # $1 = a process group we started with setsid (its leader is our child)
  [ -n "$1" ] || return 0
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 -- "-$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_idle_nginx() { stop_group "$IDLE_NGINX_PGID"; IDLE_NGINX_PGID=; }
stop_cpu_front() { stop_group "$CPU_FRONT_PGID"; CPU_FRONT_PGID=; }
cleanup() { set +e; stop_cpu_front; stop_idle_nginx; stop_serve; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- configurations ---------------------------------------------------------------------------------------------------
write_config() {  # $1 = token_cache_entries; room for the idle phase's connections, and for their idle time
  cat >"$WORK/gateway-$1.json" <<JSON
{
  "listen": "127.0.0.1:$PORT",
  "admin_listen": false,
  "limits": { "max_connections": $((IDLE_CONNECTIONS + 1024)), "idle_timeout_ms": 600000 },
  "upstreams": { "bench": { "url": "http://127.0.0.1:$PORT_UPSTREAM" } },
  "routes": [ { "path_prefix": "/api", "upstream": "bench" } ],
  "auth": { "audiences": ["peerbench-api"], "token_cache_entries": $1 },
  "issuers": [ { "issuer": "https://issuer.peerbench.test", "jwks_file": "$KEYS/jwks.json",
                 "algorithms": ["ES256", "RS256"], "token_types": ["JWT", "at+jwt"] } ],
  "identity_headers": { "subject": "X-Auth-Subject", "scopes": "X-Auth-Scope" },
  "log": { "level": "warning", "format": "text", "access_log": false }
}
JSON
}
HOT_CACHE=65536
write_config "$HOT_CACHE"
write_config 0
# The floor's front: the token service on (JWKS at /.well-known/jwks.json, answered by the gateway itself), a signing
# key made on first start, the repository's demo users file, sessions in memory.
cat >"$WORK/front.json" <<JSON
{
  "listen": "127.0.0.1:$FRONT_PORT",
  "admin_listen": false,
  "token_service": { "issuer": "http://127.0.0.1:$FRONT_PORT", "audience": "peerbench-api",
                     "signing": { "algorithm": "ES256", "key_dir": "$WORK/front-keys" }, "users_file": "$ROOT/users.json" },
  "store": { "type": "memory" },
  "log": { "level": "warning", "format": "text", "access_log": false }
}
JSON
"$BIN" check --config "$WORK/front.json" >/dev/null

bench() {  # $1 = label, $2 = token_cache_entries, $3 = token pool, $4 = targets
  say "peerbench $1: $4 + portcullis (token_cache_entries $2, TOKEN_POOL $3)"
  ( cd "$PEERBENCH" && RESULTS=$OUT/$1 TOKEN_POOL=$3 TARGETS=$4 \
      EXTRA_TARGET=portcullis=http://127.0.0.1:$PORT EXTRA_TOKEN=es256 \
      EXTRA_DESC="Portcullis ES256 (JWKS file), cache $2" \
      EXTRA_CMD="$BIN serve --config $WORK/gateway-$2.json" ./bench.sh )
}

# --- 1. the libcurl floor ---------------------------------------------------------------------------------------------
if has floor; then
  say "libcurl floor (floor.sh, ${FLOOR_DURATION} s per half)"
  ( cd "$PEERBENCH" && RESULTS=$OUT/floor DURATION=$FLOOR_DURATION FRONT_CMD="$BIN serve --config $WORK/front.json" \
      FRONT_URL=http://127.0.0.1:$FRONT_PORT/.well-known/jwks.json ./floor.sh )
fi
# --- 2. hot, 3. cold ------------------------------------------------------------------------------------------------
has hot && bench hot "$HOT_CACHE" 0 "$HOT_TARGETS"
has cold && bench cold 0 "$COLD_TOKEN_POOL" "$COLD_TARGETS"

# --- 4. cpu, 5. paced, 6. idle: against bench.sh serve (upstream, nginx proxy, Portcullis hot) ---------------------
if has cpu || has paced || has idle; then
  say "peerbench serve: nginx + portcullis (token_cache_entries $HOT_CACHE) for the paced and idle phases"
  ( cd "$PEERBENCH" && exec setsid env RESULTS="$OUT/serve" RUNDIR="$SERVE_RUNDIR" TOKEN_POOL=0 TARGETS=nginx \
      EXTRA_TARGET=portcullis=http://127.0.0.1:$PORT EXTRA_TOKEN=es256 EXTRA_DESC="Portcullis, cache $HOT_CACHE" \
      EXTRA_CMD="$BIN serve --config $WORK/gateway-$HOT_CACHE.json" ./bench.sh serve ) >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 1 600); do
    grep -q "serving (Ctrl-C to stop)" "$WORK/serve.log" && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; echo "peerbench.sh: bench.sh serve failed" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "serving (Ctrl-C to stop)" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; echo "peerbench.sh: bench.sh serve did not come up" >&2; exit 1; }
  cp "$WORK/serve.log" "$OUT/serve.log"
fi

if has cpu; then
  say "cpu: CPU time per request of Portcullis and of the upstream, ${ROUNDS:-3} rounds x ${DURATION:-10} s"
  pc_pgid=$(awk '$2 == "extra-portcullis" { print $1 }' "$SERVE_RUNDIR/pids")
  up_pgid=$(awk '$2 == "upstream" { print $1 }' "$SERVE_RUNDIR/pids")
  [ -n "$pc_pgid" ] && [ -n "$up_pgid" ] || { echo "peerbench.sh: no Portcullis or upstream in $SERVE_RUNDIR/pids" >&2; exit 1; }
  python3 Benchmarks/hotbench.py cpu --url "http://127.0.0.1:$PORT/api/bench" --group "portcullis=$pc_pgid" \
    --group "upstream=$up_pgid" --lua "$PEERBENCH/lua/bearer.lua" --token-file "$TOKEN_FILE" \
    --rounds "${ROUNDS:-3}" --duration "${DURATION:-10}" --warmup "${WARMUP:-3}" --connections "${CONNECTIONS:-64}" \
    --cpus "$WRK_CPUS" --out "$OUT/cpu.json"
  gcc -O2 -o "$WORK/curl_client" "$PEERBENCH/curl_client.c" -lcurl
  python3 Benchmarks/hotbench.py cpu-curl --client "$WORK/curl_client" --url "http://127.0.0.1:$PORT_UPSTREAM/api/bench" \
    --rounds "${ROUNDS:-3}" --duration "${DURATION:-10}" --connections "${CONNECTIONS:-64}" --cpus "$WRK_CPUS" \
    --out "$OUT/cpu-curl.json"
  setsid taskset -c "$SUT_CPUS" "$BIN" serve --config "$WORK/front.json" >"$WORK/cpu-front.log" 2>&1 </dev/null &
  CPU_FRONT_PGID=$!
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$FRONT_PORT/.well-known/jwks.json" && break; sleep 0.1; done
  python3 Benchmarks/hotbench.py cpu --url "http://127.0.0.1:$FRONT_PORT/.well-known/jwks.json" \
    --group "front=$CPU_FRONT_PGID" --lua "$PEERBENCH/lua/bearer.lua" \
    --rounds "${ROUNDS:-3}" --duration "${DURATION:-10}" --warmup "${WARMUP:-3}" --connections "${CONNECTIONS:-64}" \
    --cpus "$WRK_CPUS" --out "$OUT/cpu-front.json"
  stop_cpu_front
  # One ECDSA P-256 verification on the servers' core (OpenSSL's assembly, the fastest on this machine): with the
  # floor it bounds what any libcurl-forwarding gateway can do with a token verified on every request.
  taskset -c "$SUT_CPUS" openssl speed -seconds 3 ecdsap256 2>/dev/null \
    | awk '/ecdsa \(nistp256\)/ { printf "{\"sign_per_s\": %s, \"verify_per_s\": %s}\n", $(NF-1), $NF }' >"$OUT/ecdsa.json"
  cat "$OUT/ecdsa.json"
fi

if has paced; then
  RATE=${PACED_RATE:-$(python3 -c '
import json, sys
t = {x["name"]: x for x in json.load(open(sys.argv[1]))["targets"] if x.get("runs")}
print(round(t["nginx"]["rps_med"] / 2))' "$OUT/hot/summary.json" 2>/dev/null || true)}
  [ -n "$RATE" ] || { echo "peerbench.sh: no nginx req/s from the hot phase; set PACED_RATE" >&2; exit 1; }
  say "paced: $RATE req/s (half of nginx's hot-phase median) for portcullis, nginx and direct, $PACED_ROUNDS alternating rounds x $PACED_DURATION s"
  gcc -O2 -o "$WORK/paced_client" Benchmarks/paced_client.c
  python3 Benchmarks/hotbench.py paced --client "$WORK/paced_client" --rate "$RATE" --connections "$PACED_CONNECTIONS" \
    --duration "$PACED_DURATION" --warmup "$PACED_WARMUP" --rounds "$PACED_ROUNDS" --token-file "$TOKEN_FILE" \
    --cpus "$WRK_CPUS" --out "$OUT/paced" --target portcullis=http://127.0.0.1:$PORT/api/bench \
    --target nginx=http://127.0.0.1:$PORT_NGINX/api/bench --target direct=http://127.0.0.1:$PORT_UPSTREAM/api/bench
fi

if has idle; then
  say "idle: $IDLE_CONNECTIONS keep-alive connections, each idle after one request (ulimit -n $(ulimit -n))"
  pc_pgid=$(awk '$2 == "extra-portcullis" { print $1 }' "$SERVE_RUNDIR/pids")
  [ -n "$pc_pgid" ] || { echo "peerbench.sh: no Portcullis in $SERVE_RUNDIR/pids" >&2; exit 1; }
  taskset -c "$WRK_CPUS" python3 Benchmarks/hotbench.py idle --port "$PORT" --pgid "$pc_pgid" \
    --count "$IDLE_CONNECTIONS" --token-file "$TOKEN_FILE" --label "Portcullis" --out "$OUT/idle-portcullis.json"
  # nginx for reference: peerbench's proxy config, on its own port, with room for the connections
  mkdir -p "$WORK/idle-nginx/logs"
  sed -e "s#worker_connections [0-9]*;#worker_connections $((IDLE_CONNECTIONS + 1024));#" \
      -e "s#^pid .*#pid $WORK/idle-nginx/nginx.pid;#" -e "s#^error_log .*#error_log $WORK/idle-nginx/logs/error.log warn;#" \
      -e "s#listen 127.0.0.1:$PORT_NGINX #listen 127.0.0.1:$IDLE_NGINX_PORT #" \
      -e "s#^worker_processes .*#&\nworker_rlimit_nofile $((IDLE_CONNECTIONS + 2048));#" \
      "$SERVE_RUNDIR/proxy.nginx.conf" >"$WORK/idle-nginx/nginx.conf"
  grep -q "listen 127.0.0.1:$IDLE_NGINX_PORT " "$WORK/idle-nginx/nginx.conf" || { echo "peerbench.sh: could not copy the nginx config" >&2; exit 1; }
  setsid taskset -c "$SUT_CPUS" nginx -p "$WORK/idle-nginx" -c "$WORK/idle-nginx/nginx.conf" \
    -e "$WORK/idle-nginx/logs/start.log" >"$WORK/idle-nginx/out.log" 2>&1 </dev/null &
  IDLE_NGINX_PGID=$!
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$IDLE_NGINX_PORT/api/ping" && break; sleep 0.1; done
  curl -fs -o /dev/null "http://127.0.0.1:$IDLE_NGINX_PORT/api/ping" \
    || { cat "$WORK/idle-nginx/out.log" "$WORK/idle-nginx/logs/"* >&2; echo "peerbench.sh: the idle nginx did not start" >&2; exit 1; }
  taskset -c "$WRK_CPUS" python3 Benchmarks/hotbench.py idle --port "$IDLE_NGINX_PORT" --pgid "$IDLE_NGINX_PGID" \
    --count "$IDLE_CONNECTIONS" --token-file "$TOKEN_FILE" --label "nginx (reference)" --out "$OUT/idle-nginx.json"
  stop_idle_nginx
fi
stop_serve

# --- 7. one table -------------------------------------------------------------------------------------------------------
say "report ($OUT/report.md)"
python3 Benchmarks/hotbench.py report --label "$(date -u '+%Y-%m-%d %H:%M UTC'), ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10}" \
  --floor "$OUT/floor/floor.json" --hot "$OUT/hot/summary.json" --cold "$OUT/cold/summary.json" \
  --paced "$OUT/paced/paced.json" --cpu "$OUT/cpu.json" --cpu-front "$OUT/cpu-front.json" --cpu-curl "$OUT/cpu-curl.json" \
  --ecdsa "$OUT/ecdsa.json" --idle-portcullis "$OUT/idle-portcullis.json" --idle-nginx "$OUT/idle-nginx.json" \
  --out "$OUT/report.md"
if [ -n "$REPORT" ]; then mkdir -p "$(dirname "$REPORT")"; cp "$OUT/report.md" "$REPORT"; echo "report copied to $REPORT"; fi
