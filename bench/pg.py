#!/usr/bin/env python3
"""PostgreSQL → zstd Parquet: weir against ConnectorX, with `psql \\copy … (FORMAT binary)` to
/dev/null as the floor (the server's own cost of producing the rows).

    bench/pg.py --weir target/release/weir --python bench/.venv/bin/python [--scale 1] [--runs 3]

Starts its own PostgreSQL (Debian's, on a loopback port; as the `postgres` user when run as
root), loads TPC-H `lineitem` at `--scale` (tpchgen-cli, deterministic) and times, alternating:
weir with 1 and 2 parts (`partition: { column: l_orderkey, parts: 2 }`), ConnectorX 0.4 with 1
and 2 partitions (written with pyarrow, zstd), and the floor. Wall time is the median of
`--runs`; peak RSS from /usr/bin/time -v. Issue 20's `pg` workload (a script of its own, as it
starts a server; `.ci/run` runs it at `--scale 0.01`).
"""
import argparse
import glob
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PASSWORD = "bench"

LINEITEM = """CREATE TABLE lineitem (
  l_orderkey bigint, l_partkey bigint, l_suppkey bigint, l_linenumber integer,
  l_quantity numeric(15,2), l_extendedprice numeric(15,2), l_discount numeric(15,2), l_tax numeric(15,2),
  l_returnflag char(1), l_linestatus char(1), l_shipdate date, l_commitdate date, l_receiptdate date,
  l_shipinstruct char(25), l_shipmode char(10), l_comment varchar(44))"""


def owner(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def timed(cmd, env=None, cwd=None):
    start = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, int(m.group(1)) / 1024 if m else float("nan")


def start_postgres(work, extra=""):
    """Debian's PostgreSQL on a loopback port, data in `work`: (pg bin dir, port, psql command, env, stop)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        sys.exit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    pgbin = bins[-1]
    os.chmod(work, 0o777)
    data = os.path.join(work, "pg")
    pw = os.path.join(work, "pw")
    with open(pw, "w") as f:
        f.write(PASSWORD)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", work], check=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    subprocess.run(owner([f"{pgbin}/initdb", "-D", data, "-U", "weir", "--auth-local=trust", "--auth-host=scram-sha-256",
                          "-E", "UTF8", "--locale=C", f"--pwfile={pw}"]), check=True, capture_output=True)
    opts = f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=1GB {extra}"
    subprocess.run(owner([f"{pgbin}/pg_ctl", "-D", data, "-l", f"{work}/log", "-o", opts, "-w", "start"]), check=True,
                   capture_output=True)
    env = dict(os.environ, PGPASSWORD=PASSWORD, PG_PASSWORD=PASSWORD)
    psql = [f"{pgbin}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "weir", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At"]

    def stop():
        subprocess.run(owner([f"{pgbin}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), capture_output=True)

    return pgbin, port, psql, env, stop


def lineitem_csv(scale, python):
    """TPC-H `lineitem` at `scale` as CSV, generated once under bench/data (tpchgen-cli beside `python`)."""
    tpch = os.path.join(HERE, "data", f"tpch-{scale}")
    csv = os.path.join(tpch, "lineitem.csv")
    if not os.path.exists(csv):
        print(f"generating TPC-H SF {scale} lineitem ...", flush=True)
        tool = os.path.join(os.path.dirname(python), "tpchgen-cli")
        subprocess.run([tool, "csv", "-s", str(scale), "--tables", "lineitem", "--output-dir", tpch], check=True,
                       capture_output=True)
    return csv


def load_lineitem(scale, python, psql, env):
    """TPC-H `lineitem` at `scale` loaded into the server; its row count."""
    csv = lineitem_csv(scale, python)
    print("loading lineitem into PostgreSQL ...", flush=True)
    subprocess.run(psql + ["-c", LINEITEM], env=env, check=True, capture_output=True)
    subprocess.run(psql + ["-c", f"\\copy lineitem FROM '{csv}' (FORMAT csv, HEADER true)"], env=env, check=True,
                   capture_output=True)
    subprocess.run(psql + ["-c", "VACUUM ANALYZE lineitem"], env=env, check=True, capture_output=True)
    return subprocess.run(psql + ["-c", "SELECT count(*) FROM lineitem"], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def reader_runs(work, weir, python, url, password_env, cx_url):
    """weir with 1 and 2 parts (its own project each) and ConnectorX with 1 and 2 partitions
    (written by pyarrow), all reading `lineitem` into zstd Parquet: name -> (command, cwd)."""
    runs = {}
    for parts in (1, 2):
        d = os.path.join(work, f"weir{parts}")
        os.makedirs(d)
        part = f", partition: {{ column: l_orderkey, parts: {parts} }}" if parts > 1 else ""
        with open(os.path.join(d, "p.yaml"), "w") as f:
            f.write(f"""stores:
  app: {{ url: "{url}", options: {{ password: "${{env:{password_env}}}" }} }}
  lake: {{ url: "file://lake" }}
tasks:
  lineitem:
    extract: {{ store: app, table: lineitem{part} }}
  out:
    load: {{ from: lineitem, store: lake, path: lineitem/, compression: zstd }}
""")
        runs[f"weir, {parts} part{'s' if parts > 1 else ''}"] = ([weir, "run", "p.yaml", "--state", os.path.join(d, "state")], d)
    cx = os.path.join(work, "cx.py")
    with open(cx, "w") as f:
        f.write(f"""import sys, connectorx as cx, pyarrow.parquet as pq
n = int(sys.argv[1])
kw = dict(partition_on="l_orderkey", partition_num=n) if n > 1 else {{}}
t = cx.read_sql("{cx_url}", "SELECT * FROM lineitem", return_type="arrow", **kw)
pq.write_table(t, sys.argv[2], compression="zstd")
""")
    for n in (1, 2):
        runs[f"ConnectorX 0.4, {n} partition{'s' if n > 1 else ''}"] = ([python, cx, str(n), os.path.join(work, f"cx{n}.parquet")], work)
    return runs


def measure(runs, env, count, title):
    """Each run `count` times, alternating; a table of medians, with the ratio to the run named `floor: …`."""
    samples = {k: [] for k in runs}
    for _ in range(count):
        for name, (cmd, cwd) in runs.items():
            if name.startswith("weir"):
                shutil.rmtree(os.path.join(cwd, "lake"), ignore_errors=True)
                shutil.rmtree(os.path.join(cwd, "state"), ignore_errors=True)
            samples[name].append(timed(cmd, env=env, cwd=cwd))
    floor = statistics.median(s[0] for s in samples[next(k for k in runs if k.startswith("floor"))])
    print(f"\n{title}; medians of {count} runs\n")
    print("| reader | wall | peak RSS | × floor |\n|---|---:|---:|---:|")
    for name, s in samples.items():
        wall = statistics.median(x[0] for x in s)
        rss = statistics.median(x[1] for x in s)
        print(f"| {name} | {wall:.2f} s | {rss:.0f} MB | {wall / floor:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--python", required=True, help="a Python with connectorx, pyarrow and tpchgen-cli")
    ap.add_argument("--scale", default="1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sling", help="the Sling binary (PyPI sling-linux-amd64), to run beside")
    ap.add_argument("--sling-version", default="1.4")
    args = ap.parse_args()
    weir = os.path.abspath(args.weir)
    work = tempfile.mkdtemp(prefix="weir-pgbench-")
    pgbin, port, psql, env, stop = start_postgres(work)
    try:
        rows = load_lineitem(args.scale, args.python, psql, env)
        url = f"postgres://weir@127.0.0.1:{port}/postgres"
        runs = reader_runs(work, weir, args.python, url, "PG_PASSWORD", f"postgresql://weir:{PASSWORD}@127.0.0.1:{port}/postgres")
        if args.sling:
            # Sling's own Parquet writer (no DuckDB CLI needed), zstd.
            sling_out = os.path.join(work, "sling.parquet")
            env["WEIR_BENCH_PG"] = f"postgresql://weir:{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=disable"
            # Sling writes Parquet through the DuckDB CLI; offline, the one from PyPI (duckdb-cli).
            duckdb_cli = os.path.join(os.path.dirname(args.python), "duckdb")
            if os.path.exists(duckdb_cli):
                env["DUCKDB_PATH"] = duckdb_cli
            runs["Sling " + args.sling_version] = ([args.sling, "run", "--src-conn", "WEIR_BENCH_PG", "--src-stream", "public.lineitem",
                                                    "--tgt-object", f"file://{sling_out}", "--tgt-options", "{ format: parquet, compression: zstd }"], work)
        runs["floor: psql \\copy (FORMAT binary) to /dev/null"] = (psql + ["-c", "\\copy lineitem TO '/dev/null' (FORMAT binary)"], work)
        measure(runs, env, args.runs, f"TPC-H SF {args.scale} lineitem ({rows} rows) from PostgreSQL to zstd Parquet")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
