#!/usr/bin/env python3
"""Parquet → PostgreSQL table: weir against Sling, with `psql \\copy … FROM` the same rows as
CSV as the floor (the server's own ingest), then a 1% merge.

    bench/pgload.py --weir target/release/weir --python bench/.venv/bin/python [--sling PATH] [--scale 1] [--runs 3]

Starts its own PostgreSQL (see `pg.py`), writes TPC-H `lineitem` at `--scale` as CSV and as
zstd Parquet (typed as the table: decimals, dates, 32-bit line numbers), and times,
alternating, loads of all rows into an empty table:

- `pgload`: weir (`load: { table: lineitem_weir, mode: overwrite }`, the table created
  beforehand like the others), Sling (`--mode full-refresh`; from the CSV: its Parquet reader
  is the DuckDB CLI, which downloads an extension at run time) and the floor, `psql \\copy
  lineitem_floor FROM '….csv' (FORMAT csv)`;
- `pgmerge`: 1% of the rows (every 100th, with a new `l_comment`) merged by
  (`l_orderkey`, `l_linenumber`) into the loaded table with its primary key.

Wall time is the median of `--runs`; peak RSS from /usr/bin/time -v. Issue 22's workloads.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pg  # noqa: E402

TABLE = pg.LINEITEM.replace("CREATE TABLE lineitem", "CREATE TABLE {name}")


def lineitem_parquet(scale, python):
    """The CSV and a typed zstd Parquet of it (written once under bench/data)."""
    csv = pg.lineitem_csv(scale, python)
    out = os.path.join(os.path.dirname(csv), "lineitem.parquet")
    if not os.path.exists(out):
        script = f"""
import pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq
d = pa.decimal128(15, 2)
types = dict(l_orderkey=pa.int64(), l_partkey=pa.int64(), l_suppkey=pa.int64(), l_linenumber=pa.int32(),
             l_quantity=d, l_extendedprice=d, l_discount=d, l_tax=d, l_shipdate=pa.date32(),
             l_commitdate=pa.date32(), l_receiptdate=pa.date32())
t = pc.read_csv({csv!r}, convert_options=pc.ConvertOptions(column_types=types))
pq.write_table(t, {out!r}, compression="zstd", row_group_size=1048576)
"""
        subprocess.run([python, "-c", script], check=True)
    return csv, out


def update_parquet(parquet, python, work):
    """Every 100th row of `parquet` with a new `l_comment`: the 1% merge's input."""
    out = os.path.join(work, "update", "update.parquet")
    os.makedirs(os.path.dirname(out))
    script = f"""
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
t = pq.read_table({parquet!r})
t = t.take(pa.array(range(0, t.num_rows, 100)))
t = t.set_column(t.schema.get_field_index("l_comment"), "l_comment", pa.array(["updated by the merge"] * t.num_rows))
pq.write_table(t, {out!r}, compression="zstd")
print(t.num_rows)
"""
    rows = subprocess.run([python, "-c", script], check=True, capture_output=True, text=True).stdout.strip()
    return out, rows


def project(work, name, url, data_dir, table, load, password_env="PG_PASSWORD"):
    """A weir project reading the Parquet files of `data_dir` into `table`."""
    d = os.path.join(work, name)
    os.makedirs(d)
    with open(os.path.join(d, "p.yaml"), "w") as f:
        f.write(f"""stores:
  app: {{ url: "{url}", options: {{ password: "${{env:{password_env}}}" }} }}
  data: {{ url: "file://{data_dir}" }}
tasks:
  rows:
    extract: {{ store: data, path: "*.parquet", format: parquet }}
  out:
    load: {{ from: rows, store: app, table: {table}, {load} }}
""")
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--python", required=True, help="a Python with pyarrow and tpchgen-cli")
    ap.add_argument("--scale", default="1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sling", help="the Sling binary (PyPI sling-linux-amd64), to run beside")
    ap.add_argument("--sling-version", default="1.4")
    args = ap.parse_args()
    weir = os.path.abspath(args.weir)
    work = tempfile.mkdtemp(prefix="weir-pgload-")
    pgbin, port, psql, env, stop = pg.start_postgres(work)
    try:
        csv, parquet = lineitem_parquet(args.scale, args.python)
        data = os.path.join(work, "data")
        os.makedirs(data)
        os.symlink(parquet, os.path.join(data, "lineitem.parquet"))
        url = f"postgres://weir@127.0.0.1:{port}/postgres"
        sql = lambda q: subprocess.run(psql + ["-c", q], env=env, check=True, capture_output=True, text=True).stdout.strip()  # noqa: E731
        for name in ("lineitem_weir", "lineitem_sling", "lineitem_floor"):
            sql(TABLE.format(name=name))
        d = project(work, "weir", url, data, "lineitem_weir", "mode: overwrite")
        runs = {"weir": ([weir, "run", "p.yaml", "--state", os.path.join(d, "state")], d, "lineitem_weir")}
        if args.sling:
            env["WEIR_BENCH_PG"] = f"postgresql://weir:{pg.PASSWORD}@127.0.0.1:{port}/postgres?sslmode=disable"
            # Sling reads Parquet through the DuckDB CLI, which downloads its `json` extension at
            # run time (no network here): Sling reads the same rows from the CSV, its own reader.
            runs["Sling " + args.sling_version + " (from the CSV)"] = (
                [args.sling, "run", "--src-stream", f"file://{csv}", "--src-options", "{ format: csv }",
                 "--tgt-conn", "WEIR_BENCH_PG", "--tgt-object", "public.lineitem_sling", "--mode", "full-refresh"],
                work, "lineitem_sling")
        runs["floor: psql \\copy FROM the CSV"] = (
            psql + ["-c", f"\\copy lineitem_floor FROM '{csv}' (FORMAT csv, HEADER true)"], work, "lineitem_floor")
        samples = {k: [] for k in runs}
        for _ in range(args.runs):
            for name, (cmd, cwd, table) in runs.items():
                # Each load starts from an empty table.
                sql(f"TRUNCATE {table}")
                shutil.rmtree(os.path.join(cwd, "state"), ignore_errors=True)
                samples[name].append(pg.timed(cmd, env=env, cwd=cwd))
        counts = {t: sql(f"SELECT count(*) FROM {t}") for (_, _, t) in runs.values()}
        if len(set(counts.values())) != 1:
            sys.exit(f"the loads disagree on the row count: {counts}")
        floor = statistics.median(s[0] for s in samples[next(k for k in runs if k.startswith("floor"))])
        print(f"\npgload: TPC-H SF {args.scale} lineitem ({counts['lineitem_floor']} rows) Parquet into an empty PostgreSQL table; medians of {args.runs} runs\n")
        print("| loader | wall | peak RSS | × floor |\n|---|---:|---:|---:|")
        for name, s in samples.items():
            wall = statistics.median(x[0] for x in s)
            rss = statistics.median(x[1] for x in s)
            print(f"| {name} | {wall:.2f} s | {rss:.0f} MB | {wall / floor:.2f} |")

        # pgmerge: 1% merged into the loaded table, with its primary key.
        sql("ALTER TABLE lineitem_weir ADD PRIMARY KEY (l_orderkey, l_linenumber)")
        update, n = update_parquet(parquet, args.python, work)
        m = project(work, "merge", url, os.path.dirname(update), "lineitem_weir",
                    "mode: merge, keys: [l_orderkey, l_linenumber]")
        merges = []
        for _ in range(args.runs):
            shutil.rmtree(os.path.join(m, "state"), ignore_errors=True)
            merges.append(pg.timed([weir, "run", "p.yaml", "--state", os.path.join(m, "state")], env=env, cwd=m))
        changed = sql("SELECT count(*) FROM lineitem_weir WHERE l_comment = 'updated by the merge'")
        total = sql("SELECT count(*) FROM lineitem_weir")
        if changed != n or total != counts["lineitem_floor"]:
            sys.exit(f"the merge is wrong: {changed} rows updated (want {n}), {total} rows (want {counts['lineitem_floor']})")
        wall = statistics.median(x[0] for x in merges)
        rss = statistics.median(x[1] for x in merges)
        print(f"\npgmerge: {n} rows (1%) merged by (l_orderkey, l_linenumber) into that table: {wall:.2f} s, {rss:.0f} MB (medians of {args.runs})")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
