"""CPU per ``JwtVerifier.verify``: one token shared by a fleet vs. one token per device, with the
verified-token cache on and off (no network, one process)::

    python -m benchmarks.jwt_cache_bench [--kinds ed25519,rsa,ec] [--tokens 5000]

Prints one JSON line per (key type, tokens, cache size): microseconds of process CPU per call,
and the cache's hits and misses.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from broker.auth import JwtVerifier
from broker.auth.certs import write_keypair
from broker.auth.tokens import load_private_key, mint_token


def measure(kind: str, count: int) -> list[dict[str, object]]:
    """Verify ``count`` tokens of a fresh ``kind`` key, shared and distinct, cache off and on."""
    with tempfile.TemporaryDirectory() as directory:
        files = write_keypair(kind, directory)
        key = load_private_key(files.key)
        distinct = [mint_token(key, sub=f"device-{i}", roles=("admin",), ttl=3600) for i in range(count)]
        results: list[dict[str, object]] = []
        for tokens_name, tokens in (("shared", [distinct[0]] * count), ("distinct", distinct)):
            for cache_size in (0, 10_000):
                verifier = JwtVerifier(files.cert, cache_size=cache_size)
                start = time.process_time()
                for token in tokens:
                    verifier.verify(token)
                per_call_us = (time.process_time() - start) / count * 1e6
                results.append({
                    "kind": kind, "tokens": tokens_name, "cache_size": cache_size, "us_per_verify": round(per_call_us, 1),
                    "hits": verifier.cache.hits, "misses": verifier.cache.misses,
                })  # fmt: skip
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="ed25519,rsa,ec", help="key types, comma-separated (default: ed25519,rsa,ec)")
    parser.add_argument("--tokens", type=int, default=5000, help="verifications per case (default: 5000)")
    args = parser.parse_args(argv)
    for kind in args.kinds.split(","):
        for result in measure(kind, args.tokens):
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
