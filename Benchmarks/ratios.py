#!/usr/bin/env python3
"""Prints DESIGN §8's ratios for Portcullis from one peerbench summary.json (all numbers from the same run)."""
import json
import sys

label, path = sys.argv[1], sys.argv[2]
targets = {t["name"]: t for t in json.load(open(path))["targets"] if t.get("runs")}
ours, nginx = targets.get("portcullis"), targets.get("nginx")
if not ours:
    sys.exit(f"{path}: no portcullis data")
oidc = [t for n, t in targets.items() if n.startswith("oidc-")]
print(f"\n--- {label} ({path})")
print(f"portcullis: {ours['rps_med']:,.0f} req/s, p50 {ours['p50_med_us'] / 1000:.2f} ms, p99 {ours['p99_med_us'] / 1000:.2f} ms, "
      f"non-2xx {ours['non2xx']}, socket errors {ours['socket_errors']}")
if nginx:
    print(f"vs nginx plain proxy: throughput {ours['rps_med'] / nginx['rps_med']:.3f}x (target >= 1.0), "
          f"p99 {ours['p99_med_us'] / nginx['p99_med_us']:.3f}x (target <= 1.2)")
for t in oidc:
    print(f"vs {t['name']}: throughput {ours['rps_med'] / t['rps_med']:.2f}x (cold-path target >= 5)")
