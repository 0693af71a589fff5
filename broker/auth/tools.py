"""``rsbroker token`` and ``rsbroker certs``: the operator's key and certificate tools.

Thin argument handling over ``tokens.py`` and ``certs.py``; every function returns an
exit code (0 ok, 1 the job failed, 2 bad usage) and reports failures in one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from . import certs
from .tokens import load_private_key, mint_token

__all__ = ["certs_main", "token_main"]

_TOKEN_EPILOG = """\
The algorithm follows from the key: RSA -> RS256, EC P-256/P-384/P-521 -> ES256/ES384/ES512,
Ed25519/Ed448 -> EdDSA. The broker verifies with the matching public key (--jwt-keys FILE).

example:
  rsbroker certs keypair --type ed25519 --out keys
  rsbroker token --key keys/jwt-private.pem --sub alice --roles greeter --ttl 3600 \\
                 --iss https://id.example --aud rsbroker
"""

_CERTS_EPILOG = """\
example: a CA, a node certificate, a client certificate for mTLS
  rsbroker certs init   --out pki
  rsbroker certs node   --ca-dir pki --name n1 --host 127.0.0.1,localhost
  rsbroker certs client --ca-dir pki --name alice --roles greeter
  rsbroker serve ... --tls-cert pki/n1.pem --tls-key pki/n1-key.pem --tls-client-ca pki/ca.pem
"""


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """Parse, turning argparse's exits (help, usage errors) into return codes."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _run(job: Callable[[], None]) -> int:
    try:
        job()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsbroker token",
        description="Mint a signed JWT (bearer token for SETUP) from a private key.",
        epilog=_TOKEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--key", required=True, type=Path, help="PEM private key (RSA, EC or Ed25519), unencrypted"
    )
    parser.add_argument("--sub", required=True, help="subject: the principal name access rules match")
    parser.add_argument("--roles", type=_csv, default=[], help="comma-separated roles (the 'roles' claim)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds until expiry (default 3600)")
    parser.add_argument("--iss", help="issuer claim; must equal the broker's --jwt-issuer if that is set")
    parser.add_argument("--aud", help="audience claim; must equal the broker's --jwt-audience")
    parser.add_argument("--kid", help="key id header; must name a key in the broker's JWKS or config store")
    parser.add_argument("--jti", help="token id (default: random), the handle for revocation")
    return parser


def token_main(argv: list[str]) -> int:
    """``rsbroker token``: print a signed JWT for development and tests."""
    parser = token_parser()
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    if args.ttl <= 0:
        parser.print_usage(sys.stderr)
        print("error: --ttl must be positive", file=sys.stderr)
        return 2

    def job() -> None:
        key = load_private_key(args.key)
        print(
            mint_token(
                key,
                sub=args.sub,
                roles=args.roles,
                ttl=args.ttl,
                issuer=args.iss,
                audience=args.aud,
                kid=args.kid,
                jti=args.jti,
            )
        )

    return _run(job)


def _report(what: str, files: certs.IssuedFiles, cert_label: str = "certificate") -> None:
    print(f"{what}:\n  {cert_label}: {files.cert}\n  private key: {files.key}")


def certs_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsbroker certs",
        description="Make the keys and certificates for TLS, mTLS and JWT signing.",
        epilog=_CERTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{init,node,client,keypair}")

    init = sub.add_parser("init", help="create a CA (ca.pem, ca-key.pem) in a new directory")
    init.add_argument(
        "--out", required=True, type=Path, help="directory for the CA files (refuses to overwrite)"
    )
    init.add_argument("--name", default="rsbroker CA", help="CA common name (default: %(default)s)")
    init.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")

    node = sub.add_parser("node", help="issue a broker node certificate (server + client use)")
    node.add_argument("--ca-dir", required=True, type=Path, help="directory made by `certs init`")
    node.add_argument("--name", required=True, help="node name; files <name>.pem and <name>-key.pem")
    node.add_argument(
        "--host", required=True, type=_csv, help="comma-separated IPs and DNS names clients dial"
    )
    node.add_argument("--out", type=Path, help="output directory (default: the CA directory)")
    node.add_argument("--days", type=int, default=825, help="validity in days (default 825)")

    client = sub.add_parser("client", help="issue a client certificate for mTLS (CN = principal name)")
    client.add_argument("--ca-dir", required=True, type=Path, help="directory made by `certs init`")
    client.add_argument("--name", required=True, help="principal name; files <name>.pem and <name>-key.pem")
    client.add_argument(
        "--roles", type=_csv, default=[], help="comma-separated roles, stored as OU attributes"
    )
    client.add_argument("--out", type=Path, help="output directory (default: the CA directory)")
    client.add_argument("--days", type=int, default=365, help="validity in days (default 365)")

    keypair = sub.add_parser(
        "keypair", help="make a JWT signing key pair (<name>-private.pem, <name>-public.pem)"
    )
    keypair.add_argument(
        "--type",
        required=True,
        choices=certs.KEYPAIR_TYPES,
        help="rsa (RS256), ec (P-256, ES256) or ed25519 (EdDSA)",
    )
    keypair.add_argument("--out", required=True, type=Path, help="output directory (refuses to overwrite)")
    keypair.add_argument("--name", default="jwt", help="file name prefix (default jwt)")
    return parser


def certs_main(argv: list[str]) -> int:
    """``rsbroker certs``: make a CA, node and client certificates, and JWT key pairs."""
    args = _parse(certs_parser(), argv)
    if isinstance(args, int):
        return args
    if getattr(args, "days", 1) <= 0:
        print("error: --days must be positive", file=sys.stderr)
        return 2

    def job() -> None:
        if args.command == "init":
            _report("CA", certs.create_ca(args.out, common_name=args.name, days=args.days))
        elif args.command == "node":
            _report(
                f"node {args.name}",
                certs.issue_node_cert(args.ca_dir, args.name, args.host, out_dir=args.out, days=args.days),
            )
        elif args.command == "client":
            _report(
                f"client {args.name}",
                certs.issue_client_cert(
                    args.ca_dir, args.name, roles=args.roles, out_dir=args.out, days=args.days
                ),
            )
        else:
            _report(
                f"{args.type} key pair",
                certs.write_keypair(args.type, args.out, name=args.name),
                "public key",
            )

    return _run(job)
