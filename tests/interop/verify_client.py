"""An independent client: stubs generated from proto/ by grpcio-tools, a
Verify call over grpcio, and the attestation verified with PyJWT against the
JWKS that GetSigningKeys returns; then the same check through the JSON door
with requests, against the JWKS URL. Exits non-zero on any disagreement."""

import argparse
import json
import sys
import pathlib

import grpc
import jwt
import requests
from grpc_tools import protoc

try:  # grpcio-tools ships the well-known protos.
    import importlib.resources as resources

    WELL_KNOWN = str(resources.files("grpc_tools") / "_proto")
except Exception:  # pragma: no cover
    import pkg_resources

    WELL_KNOWN = pkg_resources.resource_filename("grpc_tools", "_proto")


def generate(proto_root: str, out: str):
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    for proto in ["vnid/v1/verification.proto", "vnid/v1/audit.proto", "google/rpc/status.proto"]:
        code = protoc.main(
            ["protoc", f"-I{proto_root}", f"-I{WELL_KNOWN}", f"--python_out={out}", f"--grpc_python_out={out}", proto]
        )
        if code != 0:
            sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, out)


def main():
    parser = argparse.ArgumentParser()
    for flag in ["--addr", "--proto-root", "--out", "--id", "--name"]:
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    generate(args.proto_root, args.out)
    from vnid.v1 import verification_pb2 as pb
    from vnid.v1 import verification_pb2_grpc as rpc
    from vnid.v1 import audit_pb2
    from vnid.v1 import audit_pb2_grpc

    with grpc.insecure_channel(args.addr) as channel:
        stub = rpc.VerificationServiceStub(channel)
        jwks = json.loads(stub.GetSigningKeys(pb.GetSigningKeysRequest()).jwks_json)
        response = stub.Verify(
            pb.VerifyRequest(
                request_id="py-interop-1",
                id_number=args.id,
                claims=pb.Claims(full_name=args.name),
                purpose=pb.PURPOSE_HEALTHCARE,
            )
        )
        assert response.verdict == pb.VERDICT_VERIFIED, response
        assert response.request_id == "py-interop-1"

        token = response.attestation
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        key = jwt.PyJWK(jwk, algorithm="EdDSA")
        claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="demo", issuer="vnid-test")
        assert claims["nonce"] == "py-interop-1", claims
        assert claims["jti"] == response.attestation_id, claims
        assert claims["verdict"] == "VERDICT_VERIFIED", claims
        assert args.id not in json.dumps(claims), "the ID number leaked into the claims"

        # One changed byte in the payload must fail.
        header, payload, signature = token.split(".")
        flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
        try:
            jwt.decode(".".join([header, flipped, signature]), key.key, algorithms=["EdDSA"], audience="demo")
        except jwt.InvalidTokenError:
            pass
        else:
            sys.exit("a tampered attestation verified")

        # Bad input comes back as INVALID_ARGUMENT.
        try:
            stub.Verify(pb.VerifyRequest(request_id="py-2", id_number="123", purpose=pb.PURPOSE_HEALTHCARE))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        else:
            sys.exit("bad input was accepted")

        # The local operator reads the person's access history: the check
        # above is on it, newest first, after this query itself.
        history = audit_pb2_grpc.AuditServiceStub(channel).ListAccessHistory(
            audit_pb2.ListAccessHistoryRequest(request_id="py-petition-1", id_number=args.id)
        )
        kinds = [r.kind for r in history.records]
        assert kinds == [audit_pb2.ACCESS_KIND_ACCESS_HISTORY, audit_pb2.ACCESS_KIND_VERIFY], history
        assert history.records[1].attestation_id == response.attestation_id, history
        assert history.records[1].purpose == pb.PURPOSE_HEALTHCARE, history

    # The same check through the JSON door, with requests, as a REST
    # integration would make it: proto3 JSON in and out, the attestation
    # verified against the JWKS at its well-known URL.
    base = f"http://{args.addr}"
    answer = requests.post(
        f"{base}/v1/verify",
        json={
            "requestId": "py-json-1",
            "idNumber": args.id,
            "claims": {"fullName": args.name},
            "purpose": "PURPOSE_HEALTHCARE",
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["verdict"] == "VERDICT_VERIFIED", body
    assert body["requestId"] == "py-json-1", body
    published = requests.get(f"{base}/.well-known/jwks.json", timeout=10)
    assert published.status_code == 200 and published.headers["ETag"], published.headers
    assert published.json() == jwks, "the JWKS URL and GetSigningKeys disagree"
    token = body["attestation"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in published.json()["keys"] if k["kid"] == kid))
    claims = jwt.decode(token, key.key, algorithms=["EdDSA", "ES256"], audience="demo", issuer="vnid-test")
    assert claims["nonce"] == "py-json-1", claims
    assert claims["jti"] == body["attestationId"], claims
    # A refusal: the JSON google.rpc.Status, the same reason as over gRPC.
    refused = requests.post(
        f"{base}/v1/verify",
        json={"requestId": "py-json-2", "idNumber": "123", "purpose": "PURPOSE_HEALTHCARE"},
        timeout=10,
    )
    assert refused.status_code == 400, refused.text
    status = refused.json()
    assert status["code"] == 3, status
    assert status["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo", status
    fields = [v["field"] for v in status["details"][1]["fieldViolations"]]
    assert "id_number" in fields, status
    print("interop ok")


if __name__ == "__main__":
    main()
