#!/usr/bin/env python3
"""Change data capture against a watermark: the same changed rows of TPC-H `lineitem` merged
into a zstd Parquet copy of the table, read once from a logical replication slot and once by a
watermark on an indexed cursor column.

    bench/cdc.py --weir target/release/weir --python bench/.venv/bin/python [--scale 1] [--runs 3]

Starts its own PostgreSQL (`wal_level = logical`), loads `lineitem` at `--scale` with a primary
key `(l_orderkey, l_linenumber)` and a cursor `l_updated` (indexed), and makes the first run of
both pipelines (the whole table). Then, `--runs` times: one UPDATE changes about a sixth of the
rows (1,000,000 at SF 1: `l_orderkey % 6 = k`, new quantity and cursor), and each pipeline's
run is timed — the CDC run reads the changes from the slot, the watermark run reads the rows
whose cursor passed the watermark; both merge them into their copy by key. Both copies are
compared with the table at the end. Wall time is the median; peak RSS from /usr/bin/time -v.
The issue's goal: CDC ≤ 1.5× the watermark run.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

from pg import load_lineitem, start_postgres  # noqa: E402


def timed(cmd, env=None, cwd=None):
    """Wall time, peak RSS (MB) and the seconds of each task (from the run's JSON report)."""
    start = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd + ["--json"], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    tasks = {t["name"]: t.get("duration") or 0.0 for t in json.loads(p.stdout)["tasks"]}
    return wall, int(m.group(1)) / 1024 if m else float("nan"), tasks

PIPELINE = """stores:
  app: {{ url: "{url}", options: {{ password: "${{env:PG_PASSWORD}}" }} }}
  lake: {{ url: "file://lake" }}
tasks:
  lineitem:
    extract: {{ store: app, table: lineitem, incremental: {incremental} }}
  out:
    load: {{ from: lineitem, store: lake, path: lineitem/, compression: zstd, mode: merge, keys: [l_orderkey, l_linenumber]{merge} }}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--python", required=True, help="a Python with duckdb, pyarrow and tpchgen-cli")
    ap.add_argument("--scale", default="1")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    weir = os.path.abspath(args.weir)
    work = tempfile.mkdtemp(prefix="weir-cdcbench-")
    pgbin, port, psql, env, stop = start_postgres(work, "-c wal_level=logical -c max_replication_slots=4 -c max_wal_size=8GB")
    try:
        rows = load_lineitem(args.scale, args.python, psql, env)
        # Short text columns never go to TOAST: PLAIN storage says so, and a primary key then
        # identifies changed rows (no REPLICA IDENTITY FULL needed).
        plain = ", ".join(f"ALTER COLUMN {c} SET STORAGE PLAIN" for c in
                          ("l_returnflag", "l_linestatus", "l_shipinstruct", "l_shipmode", "l_comment", "l_quantity",
                           "l_extendedprice", "l_discount", "l_tax"))
        for sql in (
            "ALTER TABLE lineitem ADD PRIMARY KEY (l_orderkey, l_linenumber)",
            f"ALTER TABLE lineitem {plain}",
            "ALTER TABLE lineitem ADD COLUMN l_updated bigint NOT NULL DEFAULT 0",
            "CREATE INDEX ON lineitem (l_updated)",
            "VACUUM ANALYZE lineitem",
        ):
            subprocess.run(psql + ["-c", sql], env=env, check=True, capture_output=True)
        url = f"postgres://weir@127.0.0.1:{port}/postgres"
        pipelines = {
            "CDC (slot, merge by _lsn)": ("{ cdc: { slot: weir_bench } }", ", order_by: _lsn, delete_when: \"_op = 'delete'\""),
            "watermark (indexed cursor)": ("{ watermark: { column: l_updated } }", ""),
        }
        dirs = {}
        for name, (incremental, merge) in pipelines.items():
            d = os.path.join(work, "cdc" if name.startswith("CDC") else "wm")
            os.makedirs(d)
            with open(os.path.join(d, "p.yaml"), "w") as f:
                f.write(PIPELINE.format(url=url, incremental=incremental, merge=merge))
            dirs[name] = d
            print(f"first run: {name} ...", flush=True)
            timed([weir, "run", "p.yaml", "--state", os.path.join(d, "state")], env=env, cwd=d)
        samples = {k: [] for k in pipelines}
        changed = []
        for k in range(args.runs):
            out = subprocess.run(psql + ["-c", f"UPDATE lineitem SET l_quantity = l_quantity + 1, l_updated = {k + 1} WHERE l_orderkey % 6 = {k % 6}"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            changed.append(int(out.split()[-1]))
            for name, d in dirs.items():
                samples[name].append(timed([weir, "run", "p.yaml", "--state", os.path.join(d, "state")], env=env, cwd=d))
        # Both copies equal the table.
        want = subprocess.run(psql + ["-c", "SELECT count(*), sum(l_quantity) FROM lineitem"], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()
        for name, d in dirs.items():
            got = subprocess.run([args.python, "-c",
                                  "import duckdb,sys; r = duckdb.sql(\"SELECT count(*), sum(l_quantity) FROM 'lake/lineitem/*.parquet'\").fetchall()[0]; print(f'{r[0]}|{r[1]:.2f}')"],
                                 cwd=d, capture_output=True, text=True)
            if got.returncode != 0:
                sys.exit(f"{name}: reading the copy failed: {got.stderr[-2000:]}")
            got = got.stdout.strip()
            if got != want:
                sys.exit(f"{name}: the copy holds {got}, the table {want}")
        wm = statistics.median(x[0] for x in samples["watermark (indexed cursor)"])
        print(f"\nTPC-H SF {args.scale} lineitem ({rows} rows), {statistics.median(changed):.0f} rows changed per run, "
              f"merged into zstd Parquet; medians of {args.runs} runs (copies checked against the table)\n")
        print("| incremental run | wall | read (extract) | merge (load) | peak RSS | × watermark |\n|---|---:|---:|---:|---:|---:|")
        for name, s in samples.items():
            wall = statistics.median(x[0] for x in s)
            rss = statistics.median(x[1] for x in s)
            read = statistics.median(x[2].get("lineitem", 0.0) for x in s)
            merge = statistics.median(x[2].get("out", 0.0) for x in s)
            print(f"| {name} | {wall:.2f} s | {read:.2f} s | {merge:.2f} s | {rss:.0f} MB | {wall / wm:.2f} |")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
