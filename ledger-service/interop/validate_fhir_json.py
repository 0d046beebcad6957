"""Validates FHIR JSON documents (one resource per file) with the independent `fhir.resources`
package's R4B models — the facade's Bundles, CapabilityStatement, OperationOutcomes and the
resources inside (each Bundle entry's resource is validated again by its own type).
Usage: validate_fhir_json.py FILE.json… Exit status 0 when every document validates.
"""
import json
import sys

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.provenance import Provenance

MODELS = {
    "Bundle": Bundle,
    "CapabilityStatement": CapabilityStatement,
    "Device": Device,
    "Observation": Observation,
    "OperationOutcome": OperationOutcome,
    "Patient": Patient,
    "Provenance": Provenance,
}

counts = {}


def check(doc, where):
    kind = doc.get("resourceType")
    model = MODELS.get(kind)
    if model is None:
        sys.exit(f"{where}: unexpected resourceType {kind!r}")
    try:
        model.model_validate_json(json.dumps(doc))
    except Exception as e:  # noqa: BLE001 — report any validation failure
        sys.exit(f"{where}: not a valid FHIR {kind}: {e}")
    counts[kind] = counts.get(kind, 0) + 1
    for i, c in enumerate(doc.get("contained", [])):
        check(c, f"{where} contained[{i}]")
    if kind == "Bundle":
        for i, e in enumerate(doc.get("entry", [])):
            check(e["resource"], f"{where} entry[{i}]")


for name in sys.argv[1:]:
    with open(name, encoding="utf-8") as f:
        check(json.load(f), name)
if not counts:
    sys.exit("no documents")
print("fhir.resources (R4B models) valid: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
