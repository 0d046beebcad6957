"""Verifies captured webhook deliveries with the independent Standard Webhooks implementation
(the `standardwebhooks` package): every delivery must verify with its endpoint's secret (or, after
a rotation, with either secret), and a tampered body, id or timestamp must not.

Input (stdin): JSON list of {"secrets": ["whsec_..."], "headers": {...}, "body": "..."}.
Exit status 0 when every delivery verifies and every tampering is refused.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

deliveries = json.load(sys.stdin)
if not deliveries:
    sys.exit("no deliveries to verify")
checked = 0
for d in deliveries:
    headers = {k.lower(): v for k, v in d["headers"].items()}
    for secret in d["secrets"]:
        Webhook(secret).verify(d["body"], headers)  # raises if it does not verify
        checked += 1
        for what, h, body in [
            ("body", headers, d["body"] + " "),
            ("id", {**headers, "webhook-id": headers["webhook-id"] + "x"}, d["body"]),
            ("timestamp", {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}, d["body"]),
        ]:
            try:
                Webhook(secret).verify(body, h)
            except WebhookVerificationError:
                continue
            sys.exit(f"a delivery with a tampered {what} verified: {headers['webhook-id']}")
print(f"standardwebhooks: {checked} signatures on {len(deliveries)} deliveries verified; tampered copies refused")
