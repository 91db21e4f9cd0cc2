"""Sends through Dispatch with the official Vonage Python SDK, unchanged
but for its API host: an SMS, a WhatsApp text, a WhatsApp image, and a
failover chain (the SDK's own `failover`), then a chain with our
`failover_condition` as raw HTTP with the SDK's own JWT, which its models
cannot carry. Prints what each answered as one JSON object.

Run by tests/failover/webhooks.rs (`the_official_python_sdk_sends_and_gets_its_webhooks`):
DISPATCH_SDK_HOST (host:port of an HTTPS ingest), DISPATCH_SDK_APPLICATION
and DISPATCH_SDK_PRIVATE_KEY (an application and its PEM key),
DISPATCH_SDK_TO (a recipient prefix), and REQUESTS_CA_BUNDLE (the
certificate authority that ingest's certificate is trusted through).
"""

import json
import os
import sys

import requests
from vonage import Auth, HttpClientOptions, Vonage
from vonage_messages import Sms, WhatsappImage, WhatsappImageResource, WhatsappText

host = os.environ["DISPATCH_SDK_HOST"]
to = os.environ["DISPATCH_SDK_TO"]
auth = Auth(
    application_id=os.environ["DISPATCH_SDK_APPLICATION"],
    private_key=os.environ["DISPATCH_SDK_PRIVATE_KEY"],
)
client = Vonage(auth, HttpClientOptions(api_host=host, max_retries=0))
sender = "447700900999"

sent = {}
sent["sms"] = client.messages.send(
    Sms(to=to + "00", from_=sender, text="Your code is 64873", client_ref="sdk-sms")
).message_uuid
sent["whatsapp_text"] = client.messages.send(
    WhatsappText(to=to + "01", from_=sender, text="Your code is 64873")
).message_uuid
sent["whatsapp_image"] = client.messages.send(
    WhatsappImage(
        to=to + "10",
        from_=sender,
        image=WhatsappImageResource(url="https://example.com/code.png", caption="Your code"),
    )
).message_uuid
# Rejected on WhatsApp, delivered by SMS.
chain = client.messages.send(
    WhatsappText(to=to + "02", from_=sender, text="Your code is 64873"),
    failover=[Sms(to=to + "20", from_=sender, text="Your code is 64873")],
)
sent["chain"] = {"message_uuid": chain.message_uuid, "workflow_id": chain.workflow_id}

# Not read in time on WhatsApp: our extension, which the SDK's models
# have no field for, as raw HTTP with the SDK's JWT.
body = {
    "channel": "whatsapp",
    "message_type": "text",
    "to": to + "30",
    "from": sender,
    "text": "Your code is 64873",
    "failover_condition": {"condition_status": "read", "expiry_time": 15},
    "failover": [
        {"channel": "sms", "message_type": "text", "to": to + "40", "from": sender, "text": "Your code is 64873"}
    ],
}
response = requests.post(
    f"https://{host}/v1/messages",
    json=body,
    headers={"Authorization": auth.create_jwt_auth_string().decode()},
    timeout=10,
)
if response.status_code != 202:
    sys.exit(f"raw chain: {response.status_code} {response.text}")
sent["conditional_chain"] = response.json()
print(json.dumps(sent))
