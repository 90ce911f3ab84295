#!/usr/bin/env bash
# Token verification micro-benchmark (release build): full TokenVerifier.verify per algorithm beside the raw
# signature check alone, and a verified-token cache hit. Prints µs/op; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PORTCULLIS_BENCH=1 swift test -c release --filter "GatewayTokensTests.Benchmark" 2>&1 | grep "^bench "
