#!/usr/bin/env bash
# Benchmarks: weir (release build) and DuckDB side by side. See bench/README.md.
#   bench/run.sh                    full sizes (about 15 minutes after the build)
#   bench/run.sh --quick            tiny sizes, a minute or two
#   bench/run.sh --quick --debug    the same on the debug build (what CI runs so the harness
#                                   never rots without a release build; its figures mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && mkdir -p /work/target 2>/dev/null && [ -w /work/target ]; then
  export CARGO_TARGET_DIR=/work/target
fi
profile=release
args=()
for a in "$@"; do
  if [ "$a" = "--debug" ]; then profile=debug; else args+=("$a"); fi
done
# The default build has Ballista (the `ballista` workload runs the etl pipeline on its
# standalone cluster).
if [ "$profile" = release ]; then
  cargo build --release --quiet
else
  cargo build --quiet
fi
weir="${CARGO_TARGET_DIR:-target}/$profile/weir"

# The peers' virtualenv (kept across runs; CI points WEIR_BENCH_VENV at its cache).
venv="${WEIR_BENCH_VENV:-bench/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! cmp -s bench/requirements.txt "$venv/.requirements"; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
  cp bench/requirements.txt "$venv/.requirements"
fi
exec "$venv/bin/python" bench/bench.py --weir "$weir" --build "$profile" --python "$venv/bin/python" ${args[@]+"${args[@]}"}
