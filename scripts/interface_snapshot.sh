#!/usr/bin/env bash
# Print every command's --help and the --json outputs on a fixed demo workspace, so a
# refactor can be checked for "no change of behaviour": run before and after, diff.
#   scripts/interface_snapshot.sh > before.txt; (refactor); scripts/interface_snapshot.sh > after.txt
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
mailer="${MAILER:-$here/.venv/bin/mailer}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset MAILER_DATABASE_URL MAILER_SMTP_URL MAILER_SECRET_KEY MAILER_WORKSPACE MAILER_LOG_FORMAT
now=2026-11-23T10:00
export MAILER_SECRET_KEY=interface-snapshot-key-not-secret-0123456789

commands=$("$mailer" --help | awk '/^Commands:/{f=1;next} f&&NF{print $1}')
echo "== mailer --help"; "$mailer" --help
for c in $commands; do
  echo "== mailer $c --help"; "$mailer" "$c" --help
  for sub in $("$mailer" "$c" --help | awk '/^Commands:/{f=1;next} f&&NF{print $1}'); do
    echo "== mailer $c $sub --help"; "$mailer" "$c" "$sub" --help
  done
done

"$mailer" init "$work/ws" >/dev/null
m() { "$mailer" --workspace "$work/ws" "$@"; }
m demo-data --customers 200 --seed 3 --now "$now" >/dev/null
echo "== validate --json"; m validate --json
echo "== segments list --json"; m segments list --now "$now" --json
echo "== status --json"; m status --json
for at in "$now" 2026-11-27T10:00 2026-12-01T10:00; do
  for campaign in $(ls "$work/ws/campaigns" | sed 's/\.yaml$//'); do
    echo "== plan $campaign --now $at --json"; m plan "$campaign" --now "$at" --json || true
  done
done
echo "== forecast --json"; m forecast --days 14 --from "$now" --json
# A real SMTP sink on a free port, stopped on exit.
: > "$work/sink.log"
"$mailer" sink --port 0 --maildir "$work/outbox" > "$work/sink.log" 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "listening on" "$work/sink.log"; do sleep 0.1; done
export MAILER_SMTP_URL="smtp://$(sed -n 's/^listening on //p' "$work/sink.log" | head -1)"
campaigns=$(ls "$work/ws/campaigns" | sed 's/\.yaml$//')
echo "== send --json"; m send $campaigns --now 2026-11-27T10:00 --json || true
echo "== status --json after send"; m status --json
for campaign in $(ls "$work/ws/campaigns" | sed 's/\.yaml$//'); do
  echo "== report $campaign --json"; m report "$campaign" --json || true
done
