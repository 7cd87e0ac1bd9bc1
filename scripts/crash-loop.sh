#!/usr/bin/env bash
# Crash loop for durability (issue 5): kills a release `vane serve --store-dir DIR` with SIGKILL
# at random moments under a QoS 1 + QoS 2 load to a persistent subscriber that goes on and
# offline, restarting it on the same store each time; then reports acknowledged, received, lost
# and duplicate messages in one summary line. Exits non-zero when, in sync mode, an
# acknowledged message is lost, a QoS 2 message arrives twice or a persistent session is lost.
#
#   ROUNDS=20       SIGKILLs
#   RATE=2000       messages/s offered by the publishers (QOS2_PERCENT of them at QoS 2)
#   QOS2_PERCENT=10
#   DURABILITY=sync sync | batch | memory (only sync fails on loss; the others report)
#   SEED=...        repeat a run's random kill times and subscriber behaviour
#
# The store and the broker's log are under $TMPDIR (kept when the run fails).
set -euo pipefail
cd "$(dirname "$0")/.."
export ROUNDS="${ROUNDS:-20}" RATE="${RATE:-2000}" DURABILITY="${DURABILITY:-sync}"
export QOS2_PERCENT="${QOS2_PERCENT:-10}"
exec cargo test --release -p vane --test crash_loop -- --ignored --nocapture
