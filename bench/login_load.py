"""WebSocket round trips during a password-guessing attack (issue #12, finding 3).

    .venv/bin/python -m bench.login_load [--runs 3]

The scenario of ``tests/test_login_load.py``: a real ``disco serve``, 16
attackers in another process sending wrong-password logins back to back for
5 s (login limits lifted, so every admitted attempt hashes with argon2),
while one member's WebSocket pings every 20 ms and sends a fix every fifth
ping. Prints the pings' and fixes' round trips idle and under attack, and
their ratio (the test asserts only that they are answered: times belong here).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from tests.test_login_load import _p99, attack_while_pinging, disco_for_attack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for k in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="disco-login-load-") as tmp:
            with disco_for_attack(Path(tmp)) as base:
                run = asyncio.run(attack_while_pinging(base))
        print(f"run {k + 1}: {run.summary()}")
        print(f"       ping p99 under attack / idle median: "
              f"{_p99(run.rtts) / statistics.median(run.idle):.1f}x")


if __name__ == "__main__":
    main()
