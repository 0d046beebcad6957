#!/usr/bin/env bash
# Interop check: OpenSSL accepts the committed certificate chain, and rejects a wrong one.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../testdata/vectors" && pwd)"
at=1798761600 # 2027-01-01, inside the vectors' validity (2026-01-01 .. 2030-12-31)
openssl verify -attime "$at" -CAfile "$dir/ca.pem" "$dir/sensor.pem"
openssl verify -attime "$at" -CAfile "$dir/fleet.pem" "$dir/gateway.pem"
# The gateway fleet CA issues gateways only, the manufacturer CA sensors only.
if openssl verify -attime "$at" -CAfile "$dir/ca.pem" "$dir/gateway.pem" >/dev/null 2>&1; then
  echo "FAIL: openssl accepted the gateway under the manufacturer CA" >&2; exit 1
fi
# Negative cases: the sensor certificate is not a CA; outside the validity period.
if openssl verify -attime "$at" -CAfile "$dir/sensor.pem" "$dir/gateway.pem" >/dev/null 2>&1; then
  echo "FAIL: openssl accepted a chain to a device certificate" >&2; exit 1
fi
if openssl verify -attime 1924992000 -CAfile "$dir/ca.pem" "$dir/sensor.pem" >/dev/null 2>&1; then
  echo "FAIL: openssl accepted an expired certificate" >&2; exit 1
fi
echo "openssl: chain accepted, wrong issuer and expiry rejected"
