"""``python -m benchmarks run [--quick] [--json FILE] [--plot FILE] [--only SYSTEM,...] [--scenario NAME,...]``

Run from the repository root with the project installed (``pip install -e '.[bench]'``).
Progress goes to stderr, the Markdown table to stdout; every server and generator is a
subprocess that is stopped by PID when the run ends, however it ends.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

from benchmarks import report
from benchmarks.stats import SCENARIOS
from benchmarks.suite import FULL, QUICK, TINY, run
from benchmarks.systems import LINEUPS, SYSTEMS

PLANS = {"full": FULL, "quick": QUICK, "tiny": TINY}


def _names(text: str, allowed: tuple[str, ...], what: str) -> set[str]:
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = names - set(allowed)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(sorted(unknown))}; choose from {', '.join(allowed)}")
    return names


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = top.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="measure, print the table, write JSON and a plot")
    profile = run_parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_const", const="quick", dest="plan", help="under a minute: fewer cells, short windows")
    profile.add_argument("--plan", choices=sorted(PLANS), help="named profile (tiny is the smoke test's)")
    run_parser.set_defaults(plan="full")
    run_parser.add_argument("--json", type=Path, help="write the results document here")
    run_parser.add_argument("--plot", type=Path, help="write a PNG of throughput vs in flight here")
    keys = tuple(SYSTEMS) + tuple(l.key for l in LINEUPS)
    run_parser.add_argument("--only", type=lambda t: _names(t, keys, "system"),
                            help=f"systems ({','.join(SYSTEMS)}) or single line-ups as SYSTEM[CLIENT], e.g. broker-1[pyclient]")
    run_parser.add_argument("--scenario", type=lambda t: _names(t, SCENARIOS, "scenario"), default=set(SCENARIOS),
                            help=f"scenarios: {','.join(SCENARIOS)}")  # fmt: skip
    run_parser.add_argument("--no-resources", action="store_true", help="skip the idle-connection memory figures")
    run_parser.add_argument("--logs", type=Path, help="directory for server and generator logs (default: a temporary one)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="rsbroker-bench-"))
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        outcome = run(PLANS[args.plan], args.only, args.scenario, log_dir, resources=not args.no_resources)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: every server was stopped\n")
        return 130
    doc = report.document(outcome, command, args.plan)
    sys.stdout.write(report.markdown(doc))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        report.plot(doc, args.plot)
    sys.stderr.write(f"logs in {log_dir}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
