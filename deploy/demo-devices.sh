#!/bin/sh
# Plays the factory and the hospital's device administrator for a demonstration system:
# a manufacturer CA and N sensors (SN-0001…), a fleet CA and one gateway (GW-0001), all enrolled
# in the ledger service's registry, every sensor bound to the gateway and assigned to a patient
# pseudonym (patient-1…). Used by scripts/quickstart and by docker-compose.yml.
#
#   deploy/demo-devices.sh BASE_URL ADMIN_TOKEN OUT_DIR [SENSORS]
#
# Needs sensor-sim on PATH (or SENSOR_SIM=path) and curl. Writes OUT_DIR/factory, OUT_DIR/fleet
# (CA keys and certificates), OUT_DIR/sensors and OUT_DIR/gateways (device keys, certificates).
set -eu
BASE="$1"; ADMIN="$2"; OUT="$3"; N="${4:-5}"
SIM="${SENSOR_SIM:-sensor-sim}"

ids=""
i=1
while [ "$i" -le "$N" ]; do ids="$ids --id $(printf 'SN-%04d' "$i")"; i=$((i + 1)); done

"$SIM" init-ca --name "Acme Wearables" --out "$OUT/factory" >/dev/null
# shellcheck disable=SC2086 # $ids is a list of flags
"$SIM" provision --factory "$OUT/factory" --out "$OUT/sensors" $ids >/dev/null
"$SIM" init-ca --name "Ward Gateways" --out "$OUT/fleet" >/dev/null
"$SIM" provision --role gateway --factory "$OUT/fleet" --out "$OUT/gateways" --id GW-0001 >/dev/null

post() { # path json
  curl -fsS -H "authorization: Bearer $ADMIN" -H "content-type: application/json" -d "$2" "$BASE$1" >/dev/null \
    || { echo "demo-devices: POST $1 failed" >&2; exit 1; }
}
pem() { # file -> {"certificate_pem": "..."} (PEM is base64 and dashes: only newlines need escaping)
  printf '{"certificate_pem": "%s"}' "$(awk '{printf "%s\\n", $0}' "$1")"
}

issuer() { # file role -> {"certificate_pem": "...", "role": "..."}
  printf '{"certificate_pem": "%s", "role": "%s"}' "$(awk '{printf "%s\\n", $0}' "$1")" "$2"
}

post /v1/registry/issuers "$(issuer "$OUT/factory/ca.pem" sensor-manufacturer)"
post /v1/registry/issuers "$(issuer "$OUT/fleet/ca.pem" gateway-fleet)"
post /v1/registry/gateways "$(pem "$OUT/gateways/GW-0001.pem")"
FROM=$(( $(date +%s) * 1000 - 3600000 ))
i=1
while [ "$i" -le "$N" ]; do
  id=$(printf 'SN-%04d' "$i")
  post /v1/registry/sensors "$(pem "$OUT/sensors/$id.pem")"
  post /v1/registry/bindings "{\"sensor_id\": \"$id\", \"gateway_id\": \"GW-0001\", \"from_ms\": $FROM}"
  post /v1/registry/assignments "{\"sensor_id\": \"$id\", \"pseudonym\": \"patient-$i\", \"from_ms\": $FROM}"
  i=$((i + 1))
done
echo "demo-devices: $N sensors and GW-0001 enrolled and bound in $BASE"
