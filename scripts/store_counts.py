"""`mailer status --json` on stdin, less what belongs to the ledger (its `deliveries`):
what `make demo`'s round trip compares between the workspace and its CSV copy."""

from __future__ import annotations

import json
import sys


def main() -> None:
    status = json.load(sys.stdin)
    status.pop("deliveries", None)
    json.dump(status, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
