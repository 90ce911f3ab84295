#!/usr/bin/env bash
# Builds the release binary that deploy/Dockerfile builds (swift build -c release --static-swift-stdlib), without
# Docker, and checks with ldd that every shared library it loads will be in the runtime image:
#   - packages that debian:bookworm-slim ships (deploy/bookworm-slim.packages), or
#   - packages that the Dockerfile's runtime stage installs (read from its `apt-get install` command), together with
#     their dependencies as apt resolves them on this host (a superset: both sides of an `a | b` alternative count).
# It fails if a Swift runtime library (libswiftCore.so, Foundation, dispatch, ...) is loaded dynamically, or if a
# library is not found or not in those packages. The same check runs on swift-backtrace-static, which the image
# ships as its crash backtracer. Then it smoke-tests the binary: --help, `check` on deploy/gateway.container.json
# (paths moved into a temporary folder) and on ./gateway.json, and a short `serve` (/healthz, /readyz, a 401, SIGTERM).
#
# Needs a Debian 12 host with Swift and scripts/install-deps' packages. The build goes to a scratch folder outside
# the work tree ($PORTCULLIS_STATIC_SCRATCH, default ${TMPDIR:-/tmp}/portcullis-static-build) and runs under
# `nice -n ${NICE:-15}`. A first build takes several minutes.
# Usage: deploy/check-runtime-libs.sh        exit 0: all good; 1: a check failed; 2: the build failed
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
dockerfile="$here/Dockerfile"
scratch="${PORTCULLIS_STATIC_SCRATCH:-${TMPDIR:-/tmp}/portcullis-static-build}"

fail() { echo "check-runtime-libs: FAIL: $*" >&2; exit 1; }

for tool in swift dpkg apt-cache ldd readelf curl python3; do
  command -v "$tool" >/dev/null || fail "needs $tool on the PATH (a Debian 12 host with Swift; see scripts/install-deps)"
done
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ "$codename" = bookworm ] ||
  echo "warning: this host is Debian '$codename', not bookworm: its package names and dependencies may differ from the image's" >&2

# ---- 1. build -------------------------------------------------------------------------------------------------------
echo "==> swift build -c release --static-swift-stdlib --product portcullis --scratch-path $scratch"
nice -n "${NICE:-15}" swift build -c release --static-swift-stdlib --product portcullis --scratch-path "$scratch" || {
  echo "check-runtime-libs: the build failed" >&2
  exit 2
}
bin="$(swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)/portcullis"
toolchain_bin="$(dirname "$(readlink -f "$(command -v swift)")")"
toolchain="$(dirname "$(dirname "$toolchain_bin")")"  # e.g. /opt/swift
backtracer="$(readlink -f "$toolchain_bin/../libexec/swift/linux/swift-backtrace-static")"
[ -x "$bin" ] || fail "no binary at $bin"
[ -x "$backtracer" ] || fail "no swift-backtrace-static in the toolchain ($backtracer); deploy/Dockerfile copies it"

# ---- 2. what the runtime image has ----------------------------------------------------------------------------------
# Packages of the runtime stage's apt-get install command(s): the last FROM's stage, comment lines skipped,
# continuation lines joined, options dropped.
listed="$(awk '
  /^[[:space:]]*#/ { next }
  { cmd = cmd " " $0 }
  /\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, "", cmd); next }
  {
    n = split(cmd, t, /[[:space:]]+/)
    if (t[2] == "FROM") pkgs = ""
    for (i = 1; i <= n; i++) {
      if (t[i] != "apt-get") continue
      for (j = i + 1; j <= n && t[j] != "install" && t[j] != "&&" && t[j] != ";"; j++) {}
      if (t[j] != "install") continue
      for (k = j + 1; k <= n && t[k] != "&&" && t[k] != ";" && t[k] != "||"; k++)
        if (t[k] !~ /^-/ && t[k] != "") pkgs = pkgs " " t[k]
    }
    cmd = ""
  }
  END { print pkgs }' "$dockerfile" | xargs -n1 | sort -u)"
[ -n "$listed" ] || fail "found no apt-get install command in the runtime stage of $dockerfile"
base="$(grep -v '^[[:space:]]*#' "$here/bookworm-slim.packages" | sed 's/:.*//; s/[[:space:]]//g' | grep -v '^$' | sort -u)"
# shellcheck disable=SC2086  # word splitting wanted: one argument per package
closure="$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
  --no-enhances $listed 2>/dev/null | grep -v '^[[:space:]<]' | sed 's/:.*//' | sort -u)" ||
  fail "apt-cache cannot resolve the runtime packages ($(echo $listed)); run apt-get update"
for p in $listed; do
  grep -qx "$p" <<<"$closure" || fail "apt-cache does not know the runtime package $p; run apt-get update"
done
echo "==> runtime stage installs: $(echo $listed)"
echo "    (with apt dependencies: $(comm -23 <(echo "$closure") <(echo "$base") | grep -vxF -f <(echo "$listed") | xargs))"

in_list() { grep -qxF "$1" <<<"$2"; }

# The Debian package owning a library path; /lib and /usr/lib are the same folder on a merged-/usr system, but dpkg
# knows each file under one name only.
owner() {
  local path="$1" candidate out
  for candidate in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
    [ -n "$candidate" ] || continue
    if out="$(dpkg -S "$candidate" 2>/dev/null | grep -v '^diversion' | head -n1)" && [ -n "$out" ]; then
      out="${out%%: *}"
      out="${out%%,*}"
      echo "${out%%:*}"
      return
    fi
  done
  echo "?"
}

# ---- 3. ldd ---------------------------------------------------------------------------------------------------------
problems=0
check_binary() {
  local file="$1" label="$2" needed line soname path pkg direct where
  needed="$(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
  echo
  echo "==> $label: $file ($(du -h "$file" | cut -f1))"
  echo "    NEEDED: $(echo $needed)"
  readelf -d "$file" | grep -E '\((RPATH|RUNPATH)\)' | sed 's/^ */    /' || true
  printf '    %-28s %-8s %-46s %-16s %s\n' SONAME LINK PATH PACKAGE "PROVIDED BY"
  while IFS= read -r line; do
    line="${line#"${line%%[![:space:]]*}"}"
    case "$line" in
      "" | *"statically linked"* | linux-vdso.so* | linux-gate.so*) continue ;;
      *" => not found"*)
        soname="${line%% *}"
        printf '    %-28s %-8s %-46s %-16s %s\n' "$soname" "" "not found" "-" "MISSING"
        problems=$((problems + 1))
        continue ;;
      *" => "*) soname="${line%% =>*}"; path="${line#* => }"; path="${path%% (*}" ;;
      *) path="${line%% (*}"; soname="$(basename "$path")" ;;
    esac
    direct=indirect
    in_list "$soname" "$needed" && direct=direct
    pkg="$(owner "$path")"
    case "$soname" in
      libswift* | libFoundation* | lib_Foundation* | libdispatch* | libBlocksRuntime* | libicu*swift*)
        where="FAIL: Swift runtime loaded dynamically (use --static-swift-stdlib)" ;;
      *)
        if [[ "$(readlink -f "$path")" == "$toolchain"/* ]]; then
          where="FAIL: loaded from the Swift toolchain"
        elif in_list "$pkg" "$base"; then
          where="bookworm-slim"
        elif in_list "$pkg" "$listed"; then
          where="runtime stage (apt-get install)"
        elif in_list "$pkg" "$closure"; then
          where="runtime stage (dependency)"
        else
          where="FAIL: not in the runtime image"
        fi ;;
    esac
    [[ "$where" == FAIL* ]] && problems=$((problems + 1))
    printf '    %-28s %-8s %-46s %-16s %s\n' "$soname" "$direct" "$path" "$pkg" "$where"
  done < <(ldd "$file" 2>&1)
}
check_binary "$bin" portcullis
check_binary "$backtracer" swift-backtrace-static
echo
[ "$problems" -eq 0 ] || fail "$problems shared-library problem(s) above: add the package to the runtime stage's apt-get install in $dockerfile"
echo "==> ldd: every library is in debian:bookworm-slim or installed by the runtime stage; no Swift runtime .so"

# ---- 4. smoke test --------------------------------------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-smoke.XXXXXX")"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -9 "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> portcullis --help"
"$bin" --help >"$work/help.txt" 2>&1 || fail "portcullis --help failed: $(cat "$work/help.txt")"
sed -n '1,3p' "$work/help.txt" | sed 's/^/    /'

# The container's configuration with its absolute paths moved into $work (/etc/portcullis -> $work/etc,
# /var/lib/portcullis -> $work/data) and, for serve, its listeners on free loopback ports.
read -r port admin_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
mkdir -p "$work/etc" "$work/data"
cp "$here/users.json" "$work/etc/users.json"
python3 - "$here/gateway.container.json" "$work" "$port" "$admin_port" <<'PY'
import json, sys
source, work, port, admin = sys.argv[1:]
def move(v):
    if isinstance(v, str):
        return v.replace("/etc/portcullis", work + "/etc").replace("/var/lib/portcullis", work + "/data")
    if isinstance(v, list):
        return [move(x) for x in v]
    if isinstance(v, dict):
        return {k: move(x) for k, x in v.items()}
    return v
config = move(json.load(open(source)))
json.dump(config, open(work + "/etc/gateway.json", "w"), indent=2)
config["listen"], config["admin_listen"] = "127.0.0.1:" + port, "127.0.0.1:" + admin
json.dump(config, open(work + "/etc/gateway.serve.json", "w"), indent=2)
PY
export PORTCULLIS_ISSUER=http://localhost:8080
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

echo "==> portcullis check (container config, LEGACY_SECRET unset: must fail and name it)"
if env -u LEGACY_SECRET "$bin" check --config "$work/etc/gateway.json" >"$work/out.txt" 2>&1; then
  fail "check passed although LEGACY_SECRET is unset"
fi
grep -q 'LEGACY_SECRET' "$work/out.txt" || fail "check did not name LEGACY_SECRET: $(cat "$work/out.txt")"
sed 's/^/    /' "$work/out.txt"

echo "==> portcullis check (container config, LEGACY_SECRET set)"
LEGACY_SECRET="$secret" "$bin" check --config "$work/etc/gateway.json" >"$work/out.txt" 2>&1 ||
  fail "check of deploy/gateway.container.json failed: $(cat "$work/out.txt")"
sed 's/^/    /' "$work/out.txt"

echo "==> portcullis check (./gateway.json)"
"$bin" check --config "$root/gateway.json" >"$work/out.txt" 2>&1 || fail "check of gateway.json failed: $(cat "$work/out.txt")"
sed 's/^/    /' "$work/out.txt"

echo "==> portcullis serve (container config on 127.0.0.1:$port, admin 127.0.0.1:$admin_port)"
LEGACY_SECRET="$secret" "$bin" serve --config "$work/etc/gateway.serve.json" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/healthz" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || fail "serve exited early: $(cat "$work/serve.log")"
  sleep 0.1
done
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true; }
s="$(status "http://127.0.0.1:$admin_port/healthz")"; echo "    GET /healthz -> $s"; [ "$s" = 200 ] || fail "/healthz answered $s"
s="$(status "http://127.0.0.1:$admin_port/readyz")"; echo "    GET /readyz  -> $s"; [ "$s" = 200 ] || fail "/readyz answered $s"
s="$(status "http://127.0.0.1:$port/anything")"; echo "    GET /anything without a token -> $s"; [ "$s" = 401 ] || fail "an unauthenticated request got $s"
ls "$work/data/keys" | grep -q '\.ES256\.pem$' || fail "no signing key was created in the data folder"
echo "    signing key created in the data folder: $(cd "$work/data/keys" && ls | xargs)"
kill -TERM "$server"
for _ in $(seq 1 200); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
kill -0 "$server" 2>/dev/null && fail "serve still running 20 s after SIGTERM"
rc=0; wait "$server" || rc=$?
server=""
echo "    SIGTERM -> exit $rc"
[ "$rc" -eq 0 ] || fail "serve exited $rc after SIGTERM: $(tail -n 5 "$work/serve.log")"

echo
echo "check-runtime-libs: OK"
