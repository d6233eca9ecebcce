"""A client of the ExternalJWTSigner API generated at test time from api.proto (upstream's
messages), as kube-apiserver uses it: Sign returns a header and a signature that are joined
with the payload; FetchKeys' keys verify the result (with PyJWT, outside badge).

usage: client.py STUB_DIR SOCKET ROTATE_COMMAND...
Signs through two rotations run by ROTATE_COMMAND; every token must verify with the keys
FetchKeys returned before it was signed. Prints a JSON summary.
"""
import base64
import json
import os
import re
import subprocess
import sys
import time

import grpc
import jwt
from cryptography.hazmat.primitives import serialization

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "vault"

stub_dir, socket = sys.argv[1], sys.argv[2]
rotate = sys.argv[3:]
here = os.path.dirname(os.path.abspath(__file__))
subprocess.run(
    [sys.executable, "-m", "grpc_tools.protoc", "-I", here, "--python_out", stub_dir,
     "--grpc_python_out", stub_dir, os.path.join(here, "api.proto")],
    check=True,
)
sys.path.insert(0, stub_dir)
import api_pb2  # noqa: E402
import api_pb2_grpc  # noqa: E402

# kube-apiserver dials with authority "localhost" too.
channel = grpc.insecure_channel("unix://" + socket, options=[("grpc.default_authority", "localhost")])
stub = api_pb2_grpc.ExternalJWTSignerStub(channel)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims():
    now = int(time.time())
    return {"iss": ISSUER, "sub": "system:serviceaccount:default:signer", "aud": [AUDIENCE],
            "iat": now, "nbf": now, "exp": now + 600,
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "signer"}}}


def sign():
    payload = b64(json.dumps(claims()).encode())
    response = stub.Sign(api_pb2.SignJWTRequest(claims=payload))
    header = json.loads(unb64(response.header))
    # Upstream's validateJWTHeader: only alg, kid and typ; typ JWT; a supported alg.
    assert set(header) == {"alg", "kid", "typ"}, header
    assert header["typ"] == "JWT" and header["alg"] in ("RS256", "ES256"), header
    assert 0 < len(header["kid"]) <= 1024 and response.signature, header
    return header["kid"], response.header + "." + payload + "." + response.signature


def fetch():
    response = stub.FetchKeys(api_pb2.FetchKeysRequest())
    assert 0 < response.refresh_hint_seconds <= 60, response.refresh_hint_seconds
    assert response.data_timestamp.seconds > 0, response
    assert response.keys, response
    keys = {}
    for key in response.keys:
        assert not key.exclude_from_oidc_discovery, key.key_id
        keys[key.key_id] = serialization.load_der_public_key(key.key)
    return keys, response.data_timestamp.seconds


def verify(token, keys):
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid in keys, f"kid {kid} signed a token but was not in the keys fetched before: {sorted(keys)}"
    return jwt.decode(token, keys[kid], algorithms=["RS256", "ES256"], audience=AUDIENCE, issuer=ISSUER)


metadata = stub.Metadata(api_pb2.MetadataRequest())
assert metadata.max_token_expiration_seconds >= 600, metadata

try:
    stub.Sign(api_pb2.SignJWTRequest(claims="not base64 json!"))
    raise AssertionError("Sign accepted claims that are not base64url JSON")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e

signers, tokens, timestamps, rounds = [], [], [], 0


def one_round():
    global rounds
    keys_before, stamp = fetch()
    timestamps.append(stamp)
    kid, token = sign()
    verify(token, keys_before)
    tokens.append(token)
    if not signers or signers[-1] != kid:
        signers.append(kid)
    rounds += 1


one_round()
deadline = time.monotonic() + 120
staged_listed = []
for _ in range(2):
    out = subprocess.run(rotate, check=True, capture_output=True, text=True).stdout
    added = re.search(r"added key (\S+)", out).group(1)
    keys_now, _ = fetch()
    # Listed from the moment it is published, before it signs.
    staged_listed.append(added in keys_now)
    while signers[-1] != added:
        assert time.monotonic() < deadline, f"{added} never took over signing: {signers}"
        one_round()
        time.sleep(0.1)

# Tokens signed before each rotation still verify with the keys fetched at the end.
final_keys, _ = fetch()
for token in tokens:
    verify(token, final_keys)
assert timestamps == sorted(timestamps), timestamps
print(json.dumps({"signers": signers, "rounds": rounds, "staged_listed": staged_listed,
                  "max_token_expiration_seconds": metadata.max_token_expiration_seconds,
                  "timestamps_changed": len(set(timestamps)) > 1}))
