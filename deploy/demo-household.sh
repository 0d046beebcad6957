#!/bin/sh
# Private mode for a demonstration system (issue #17): a home's temperature sensor (TH-0001,
# from the manufacturer CA of deploy/demo-devices.sh) and its gateway (HG-0001, from the fleet
# CA), enrolled and bound; the tenants' app's public key enrolled as a recipient of household
# HH-0001; the gateway bound to the household. Run after demo-devices.sh.
#
#   deploy/demo-household.sh BASE_URL ADMIN_TOKEN OUT_DIR RECIPIENT_PUBLIC_KEY_HEX
#
# Needs sensor-sim on PATH (or SENSOR_SIM=path) and curl. Writes OUT_DIR/home-sensors and
# OUT_DIR/home-gateways.
set -eu
BASE="$1"; ADMIN="$2"; OUT="$3"; PK="$4"
SIM="${SENSOR_SIM:-sensor-sim}"

"$SIM" provision --factory "$OUT/factory" --out "$OUT/home-sensors" --id TH-0001 >/dev/null
"$SIM" provision --role gateway --factory "$OUT/fleet" --out "$OUT/home-gateways" --id HG-0001 >/dev/null

post() { # path json
  curl -fsS -H "authorization: Bearer $ADMIN" -H "content-type: application/json" -d "$2" "$BASE$1" >/dev/null \
    || { echo "demo-household: POST $1 failed" >&2; exit 1; }
}
pem() { printf '{"certificate_pem": "%s"}' "$(awk '{printf "%s\\n", $0}' "$1")"; }

FROM=$(( $(date +%s) * 1000 - 3600000 ))
post /v1/registry/gateways "$(pem "$OUT/home-gateways/HG-0001.pem")"
post /v1/registry/sensors "$(pem "$OUT/home-sensors/TH-0001.pem")"
post /v1/registry/bindings "{\"sensor_id\": \"TH-0001\", \"gateway_id\": \"HG-0001\", \"from_ms\": $FROM}"
post /v1/registry/recipients "{\"household\": \"HH-0001\", \"name\": \"tenants-phone\", \"public_key\": \"$PK\", \"from_ms\": $FROM}"
post /v1/registry/household-bindings "{\"gateway_id\": \"HG-0001\", \"household\": \"HH-0001\", \"from_ms\": $FROM}"
echo "demo-household: TH-0001 through HG-0001, encrypted for household HH-0001's recipient, in $BASE"
