"""Validates exported NDJSON files as FHIR R4 resources with the independent `fhir.resources`
package (its R4B models: Observation, Device and Provenance are unchanged from R4 in what we
use). Usage: validate_fhir.py FILE.ndjson… — the resource type comes from each line's
resourceType and must match the file name. Exit status 0 when every line validates.
"""
import json
import pathlib
import sys

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance

MODELS = {"Observation": Observation, "Device": Device, "Provenance": Provenance}

total = 0
for name in sys.argv[1:]:
    path = pathlib.Path(name)
    want = path.name.split(".")[0]
    n = 0
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        kind = json.loads(line).get("resourceType")
        if kind != want:
            sys.exit(f"{name}:{lineno}: a {kind} in the {want} file")
        try:
            MODELS[kind].model_validate_json(line)
        except Exception as e:  # noqa: BLE001 — report any validation failure
            sys.exit(f"{name}:{lineno}: not a valid FHIR {kind}: {e}")
        n += 1
    if n == 0:
        sys.exit(f"{name}: no resources")
    total += n
print(f"fhir.resources (R4B models): {total} resources in {len(sys.argv) - 1} files valid")
