"""Pages through a patient's Observations with fhirpy (a FHIR client library written by
others), which follows the Bundles' `next` links itself. Usage: fhirpy_pages.py BASE TOKEN
PATIENT PAGE_SIZE. Prints {"ids": [...], "total": n} as JSON.
"""
import json
import sys

from fhirpy import SyncFHIRClient

base, token, patient, page = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = SyncFHIRClient(base, authorization=f"Bearer {token}")
search = client.resources("Observation").search(patient=f"Patient/{patient}").limit(page)
ids = [r.id for r in search.fetch_all()]
print(json.dumps({"ids": ids, "total": search.count()}))
