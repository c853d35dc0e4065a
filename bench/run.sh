#!/usr/bin/env bash
# Benchmarks: weir (release build) and DuckDB side by side. See bench/README.md.
#   bench/run.sh            full sizes (about 15 minutes after the build)
#   bench/run.sh --quick    tiny sizes, a minute or two (CI runs it so the harness never rots)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && mkdir -p /work/target 2>/dev/null && [ -w /work/target ]; then
  export CARGO_TARGET_DIR=/work/target
fi
# With Ballista (the `ballista` workload runs the etl pipeline on its standalone cluster); the
# local engine is the same code in either build.
cargo build --release --quiet --features distributed
weir="${CARGO_TARGET_DIR:-target}/release/weir"

venv=bench/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! cmp -s bench/requirements.txt "$venv/.requirements"; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
  cp bench/requirements.txt "$venv/.requirements"
fi
exec "$venv/bin/python" bench/bench.py --weir "$weir" --python "$venv/bin/python" "$@"
