#!/usr/bin/env bash
# HTTP/2 in (DESIGN §11): h2load through Portcullis beside nginx's HTTP/2 front, in the same run, against one nginx
# upstream (a fixed 200), every server pinned to CPU 0 and the clients to CPU 1 like peerbench. Rows:
#   nginx h2c / Portcullis h2c     cleartext, prior knowledge, no auth (Portcullis: an `auth: none` route)
#   Portcullis h2c + token         one ES256 token reused on every stream (verified-token cache on)
#   Portcullis h2c → h2c upstream  the same `auth: none` route, but HTTP/2 out too (upstream `http_version: "h2c"`,
#                                  streams multiplexed by libcurl on shared connections; needs libcurl 8)
#   nginx h2 / Portcullis h2       TLS 1.3 with ALPN h2, no auth
# then full TLS handshakes per second (`openssl s_time -new`, no resumption) against both TLS fronts.
# Both fronts proxy HTTP/1.1 to the upstream over kept-alive connections (nginx: keepalive 64; Portcullis: libcurl);
# nginx cannot proxy HTTP/2, so the h2-out row is compared with nginx's h1-out front. Each row reports the median
# req/s of the rounds and the p99 of every request's time (h2load --log-file) over all rounds.
# Usage: Benchmarks/h2-bench.sh   (DURATION=10 CONNECTIONS=4 STREAMS=32 ROUNDS=3 PORTCULLIS_BIN=...)
# Stops everything it started, by pid, on any exit; refuses to start if one of its ports is in use.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-4}
STREAMS=${STREAMS:-32}
ROUNDS=${ROUNDS:-3}
P_UP=18280 P_NGX_H2C=18281 P_NGX_TLS=18282 P_PC=18283 P_PC_TLS=18284 P_UP_H2=18285

for tool in nginx h2load openssl taskset python3; do
  command -v $tool >/dev/null || { echo "h2-bench: $tool is missing (nginx-light, nghttp2-client, openssl, util-linux)" >&2; exit 1; }
done
for port in $P_UP $P_NGX_H2C $P_NGX_TLS $P_PC $P_PC_TLS $P_UP_H2; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "h2-bench: port $port is in use" >&2; exit 1; fi
done
if [ -z "${PORTCULLIS_BIN:-}" ]; then
  swift build -c release --product portcullis
  PORTCULLIS_BIN=$ROOT/.build/release/portcullis
fi

WORK=$(mktemp -d /tmp/portcullis-h2-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- certificates and a token ---------------------------------------------------------------------------------
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
  -subj /CN=h2-bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
  -extfile server.ext 2>/dev/null
TOKEN=$(python3 - <<'PY'
import base64, json, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
key = ec.generate_private_key(ec.SECP256R1())
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
with open("issuer.pem", "wb") as f:
    f.write(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
now = int(time.time())
head = b64(json.dumps({"alg": "ES256", "typ": "at+jwt"}).encode())
body = b64(json.dumps({"iss": "h2-bench", "sub": "bench", "aud": "api", "iat": now, "exp": now + 3600}).encode())
r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
print(f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
PY
)

# --- servers --------------------------------------------------------------------------------------------------
mkdir -p logs tmp
cat >nginx.conf <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path $WORK/tmp/body; proxy_temp_path $WORK/tmp/proxy; fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi; scgi_temp_path $WORK/tmp/scgi;
    keepalive_requests 10000000;
    upstream up { server 127.0.0.1:$P_UP; keepalive 64; keepalive_requests 10000000; }
    server { listen 127.0.0.1:$P_UP; location / { return 200 "ok\n"; } }
    server { listen 127.0.0.1:$P_UP_H2 http2; http2_max_concurrent_streams 1024; location / { return 200 "ok\n"; } }
    server {
        listen 127.0.0.1:$P_NGX_H2C http2;
        listen 127.0.0.1:$P_NGX_TLS ssl http2;
        ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key;
        ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
taskset -c 0 nginx -c "$WORK/nginx.conf" -e "$WORK/logs/error.log" &
PIDS+=($!)

gateway_config() {  # $1 = port, $2 = tls block or empty
  cat <<EOF
{ "listen": "127.0.0.1:$1", "admin_listen": false, $2
  "limits": { "max_concurrent_streams": 256 },
  "upstreams": { "up": { "url": "http://127.0.0.1:$P_UP" },
                 "up2": { "url": "http://127.0.0.1:$P_UP_H2", "http_version": "h2c" } },
  "routes": [ { "path_prefix": "/open", "upstream": "up", "auth": "none" }, { "path_prefix": "/api", "upstream": "up" },
              { "path_prefix": "/h2out", "upstream": "up2", "auth": "none" } ],
  "auth": { "audiences": ["api"] },
  "issuers": [ { "issuer": "h2-bench", "public_key_file": "$WORK/issuer.pem", "algorithms": ["ES256"] } ],
  "log": { "level": "warning", "format": "text", "access_log": false } }
EOF
}
gateway_config $P_PC "" >plain.json
gateway_config $P_PC_TLS "\"tls\": { \"cert_file\": \"$WORK/server.pem\", \"key_file\": \"$WORK/server.key\" }," >tls.json
taskset -c 0 "$PORTCULLIS_BIN" serve --config plain.json 2>logs/portcullis-plain.log &
PIDS+=($!)
taskset -c 0 "$PORTCULLIS_BIN" serve --config tls.json 2>logs/portcullis-tls.log &
PIDS+=($!)

for port in $P_UP $P_UP_H2 $P_NGX_H2C $P_PC $P_PC_TLS; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
# Correctness first: every front answers 200 over HTTP/2, and Portcullis refuses a missing token.
check() {  # $1 = expected status, rest: curl arguments
  local want=$1; shift
  local got; got=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --cacert "$WORK/ca.pem" "$@")
  [ "$got" = "$want 2" ] || { echo "h2-bench: check failed: $* → $got (want $want over HTTP/2)" >&2; exit 1; }
}
check 200 --http2-prior-knowledge http://127.0.0.1:$P_NGX_H2C/open/x
check 200 --http2-prior-knowledge http://127.0.0.1:$P_PC/open/x
check 200 --http2-prior-knowledge -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$P_PC/api/x
check 401 --http2-prior-knowledge http://127.0.0.1:$P_PC/api/x
check 200 --http2-prior-knowledge http://127.0.0.1:$P_PC/h2out/x
check 200 --http2 https://127.0.0.1:$P_NGX_TLS/open/x
check 200 --http2 https://127.0.0.1:$P_PC_TLS/open/x

# --- load -----------------------------------------------------------------------------------------------------
declare -A TARGETS=(
  ["nginx h2c"]="http://127.0.0.1:$P_NGX_H2C/open/x"
  ["Portcullis h2c"]="http://127.0.0.1:$P_PC/open/x"
  ["Portcullis h2c + token"]="http://127.0.0.1:$P_PC/api/x"
  ["Portcullis h2c, h2c out"]="http://127.0.0.1:$P_PC/h2out/x"
  ["nginx h2 (TLS)"]="https://127.0.0.1:$P_NGX_TLS/open/x"
  ["Portcullis h2 (TLS)"]="https://127.0.0.1:$P_PC_TLS/open/x"
)
ORDER=("nginx h2c" "Portcullis h2c" "Portcullis h2c + token" "Portcullis h2c, h2c out" "nginx h2 (TLS)" "Portcullis h2 (TLS)")
: >results.tsv
for round in $(seq "$ROUNDS"); do
  for name in "${ORDER[@]}"; do
    extra=()
    [[ $name == *token* ]] && extra=(-H "Authorization: Bearer $TOKEN")
    log="$WORK/times-${name//[^A-Za-z0-9]/_}-$round.tsv"
    out=$(taskset -c 1 h2load -D "$DURATION" --warm-up-time 1 -c "$CONNECTIONS" -m "$STREAMS" --log-file="$log" \
      "${extra[@]}" "${TARGETS[$name]}")
    rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
    ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
    bad=$(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored.*/\1+\2/p' <<<"$out")
    [ -n "$rps" ] || { echo "h2-bench: no result for $name:" >&2; echo "$out" >&2; exit 1; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$rps" "$ok" "$bad" "$log" >>results.tsv
  done
  # The order rotates each round, so no target always follows the same one.
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}")
done

handshakes() {  # $1 = port → connections per second with a full handshake each
  taskset -c 1 openssl s_time -connect 127.0.0.1:$1 -new -time "$DURATION" 2>/dev/null |
    sed -n 's/.* \([0-9.]*\) connections\/user sec.*/\1/p' | head -1
}
NGX_HS=$(handshakes $P_NGX_TLS)
PC_HS=$(handshakes $P_PC_TLS)

python3 - "$NGX_HS" "$PC_HS" "$WORK/results.tsv" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[3]) if line.strip()]
by, times = {}, {}
for _, name, rps, ok, bad, log in rows:
    by.setdefault(name, []).append(float(rps or 0))
    # h2load's per-request log: start (µs since the epoch), status, µs to the end of the response.
    with open(log) as f:
        times.setdefault(name, []).extend(int(line.split("\t")[2]) for line in f if line.count("\t") >= 2)


def p99(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))] / 1000 if values else float("nan")


nginx = {"h2c": "nginx h2c", "tls": "nginx h2 (TLS)"}
print("| target | req/s (median) | vs nginx, same transport | p99 ms (all rounds) | p99 vs nginx |")
print("|---|---:|---:|---:|---:|")
for name, values in by.items():
    base = nginx["tls" if "TLS" in name else "h2c"]
    print(f"| {name} | {statistics.median(values):,.0f} | {statistics.median(values) / statistics.median(by[base]):.3f} "
          f"| {p99(times[name]):.2f} | {p99(times[name]) / p99(times[base]):.2f} |")
ngx, pc = (float(x or 0) for x in sys.argv[1:3])
print(f"\nfull TLS handshakes/s (openssl s_time -new): nginx {ngx:,.0f}, Portcullis {pc:,.0f}"
      + (f" ({pc / ngx:.3f}× nginx)" if ngx else ""))
PY
