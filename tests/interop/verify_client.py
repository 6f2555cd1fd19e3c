"""An independent client: stubs generated from proto/ by grpcio-tools, a
Verify call over grpcio, and the attestation verified with PyJWT against the
JWKS that GetSigningKeys returns. Exits non-zero on any disagreement."""

import argparse
import json
import sys
import pathlib

import grpc
import jwt
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
    print("interop ok")


if __name__ == "__main__":
    main()
