#!/usr/bin/env python3
"""Regenerates signatures.json, the golden vectors for package webhooks.

The expected signatures are computed here with Python's hmac module, on
purpose not with the Go code under test. Run from this directory:

    python3 gen_signatures.py > signatures.json
"""
import base64
import hashlib
import hmac
import json


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


def sign(key_b64: str, msg_id: str, ts: int, body: str) -> str:
    key = base64.b64decode(key_b64.removeprefix("whsec_"), validate=True)
    msg = f"{msg_id}.{ts}.".encode() + body.encode("utf-8")
    mac = hmac.new(key, msg, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


KEY32 = whsec(bytes(range(32)))
KEY64 = whsec(bytes(range(0x40, 0x80)))
KEY100 = whsec((b"asyncgate-long-key-" * 6)[:100])
KEY_OLD = whsec(hashlib.sha256(b"asyncgate old secret").digest())
KEY_NEW = whsec(hashlib.sha256(b"asyncgate new secret").digest())

ORDER = json.dumps(
    {
        "id": "evt_01J9ZQ7W0000000000000000",
        "type": "order.executed",
        "created_at": "2026-01-02T03:04:05Z",
        "data": {"id": "ord_1", "symbol": "ACME", "side": "buy", "quantity": 10},
    },
    separators=(",", ":"),
)

CASES = [
    # The example of the Standard Webhooks specification and its libraries:
    # its secret decodes to a 24-byte key, the shortest the spec allows.
    ("standard webhooks example", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
     '{"test": 2432232314}', ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
    ("spec example, bare base64 secret", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
     '{"test": 2432232314}', ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
    ("32-byte key, empty body", "msg_empty", 1700000000, "", [KEY32]),
    ("order event", "2b5c2f1e-8a4e-7c3d-9f00-0123456789ab", 1767323045, ORDER, [KEY32]),
    ("dots, newlines and unicode in the body", "msg.with.dots", 1767323045,
     'a.b.c\n{"name":"Zoë ✓"}\r\n', [KEY32]),
    ("64-byte key (one SHA-256 block)", "msg_block", 2000000000, ORDER, [KEY64]),
    ("100-byte key (longer than a block, hashed first)", "msg_long", 2000000001, ORDER, [KEY100]),
    ("rotation: new and old secret", "msg_rotate", 1767323045, ORDER, [KEY_NEW, KEY_OLD]),
    ("timestamp zero", "msg_epoch", 0, "{}", [KEY32]),
]


def main() -> None:
    vectors = []
    for name, msg_id, ts, body, secrets in CASES:
        vectors.append(
            {
                "name": name,
                "msg_id": msg_id,
                "timestamp": ts,
                "body": body,
                "secrets": secrets,
                "signature": " ".join(sign(s, msg_id, ts, body) for s in secrets),
            }
        )
    doc = {
        "comment": "Golden Standard Webhooks signatures, computed by gen_signatures.py "
        "with Python's hmac module (not with the Go code they test).",
        "vectors": vectors,
    }
    print(json.dumps(doc, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
