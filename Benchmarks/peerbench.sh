#!/usr/bin/env bash
# Runs Portcullis through ../shared/peerbench beside nginx (plain proxy) and Apache mod_auth_openidc, pinned like
# the peers, twice:
#   hot  — one ES256 token reused, verified-token cache on (the common case: a client repeats its token);
#   cold — token_cache_entries 0 and TOKEN_POOL=256: every request verified from scratch.
# Prints the ratios of DESIGN §8 from both runs. Needs the peerbench packages (see its README); installs them.
# Usage: Benchmarks/peerbench.sh [hot|cold|both]   (ROUNDS, DURATION, ... pass through to bench.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERBENCH=${PEERBENCH:-$ROOT/../shared/peerbench}
MODE=${1:-both}
PORT=${PORTCULLIS_BENCH_PORT:-18090}

need=()
for pkg in nginx-light wrk apache2 libapache2-mod-auth-openidc curl iproute2 util-linux time; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
python3 -c "import jwt, cryptography" 2>/dev/null || python3 -m pip install -q pyjwt cryptography

scripts/install-deps
swift build -c release --product portcullis
BIN=$ROOT/.build/release/portcullis

STATE=${PEERBENCH_STATE:-$([ -w "$PEERBENCH" ] && echo "$PEERBENCH" || echo "${TMPDIR:-/tmp}/peerbench-state")}
KEYS=$STATE/keys
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

write_config() {  # $1 = token_cache_entries
  cat >"$WORK/gateway-$1.json" <<JSON
{
  "listen": "127.0.0.1:$PORT",
  "admin_listen": false,
  "upstreams": { "bench": { "url": "http://127.0.0.1:18080" } },
  "routes": [ { "path_prefix": "/api", "upstream": "bench" } ],
  "auth": { "audiences": ["peerbench-api"], "token_cache_entries": $1 },
  "issuers": [ { "issuer": "https://issuer.peerbench.test", "jwks_file": "$KEYS/jwks.json",
                 "algorithms": ["ES256", "RS256"], "token_types": ["JWT", "at+jwt"] } ],
  "identity_headers": { "subject": "X-Auth-Subject", "scopes": "X-Auth-Scope" },
  "log": { "level": "warning", "format": "text", "access_log": false }
}
JSON
}

run() {  # $1 = label, $2 = cache entries, $3 = token pool
  write_config "$2"
  echo "=== portcullis $1: token_cache_entries=$2 TOKEN_POOL=$3 ==="
  ( cd "$PEERBENCH" && TOKEN_POOL=$3 EXTRA_TARGET=portcullis=http://127.0.0.1:$PORT EXTRA_TOKEN=es256 \
      EXTRA_DESC="Portcullis ES256 (JWKS file), cache $2" \
      EXTRA_CMD="$BIN serve --config $WORK/gateway-$2.json" ./bench.sh ) | tee "$WORK/$1.log"
  summary=$(grep -o "/[^ ]*results/[0-9-]*" "$WORK/$1.log" | tail -1)
  [ -n "$summary" ] && [ -f "$summary/summary.json" ] && python3 "$ROOT/Benchmarks/ratios.py" "$1" "$summary/summary.json"
}

case $MODE in
  hot) run hot 65536 0 ;;
  cold) run cold 0 256 ;;
  both) run hot 65536 0; run cold 0 256 ;;
  *) echo "usage: $0 [hot|cold|both]" >&2; exit 1 ;;
esac
