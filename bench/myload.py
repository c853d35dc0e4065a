#!/usr/bin/env python3
"""Parquet → MariaDB table: weir against Sling, with `mariadb` `LOAD DATA LOCAL INFILE` of the
same rows as CSV as the floor (the server's own ingest), then a 1% merge — `pgload.py`'s pair
for MySQL/MariaDB.

    bench/myload.py --weir target/release/weir --python bench/.venv/bin/python [--sling PATH] [--scale 1] [--runs 3]

Starts its own MariaDB (see `mysql.py`), writes TPC-H `lineitem` at `--scale` as CSV and as
zstd Parquet (as `pgload.py` does), and times, alternating, loads of all rows into an empty
table (created beforehand, the same for every loader):

- `myload`: weir (`load: { table: lineitem_weir, mode: overwrite }`), Sling
  (`--mode full-refresh`, from the CSV) and the floor, `mariadb -e "LOAD DATA LOCAL INFILE …"`;
- `mymerge`: 1% of the rows (every 100th, with a new `l_comment`) merged by
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
import mysql  # noqa: E402
import pg  # noqa: E402
from pgload import lineitem_parquet, project, update_parquet  # noqa: E402

TABLE = mysql.LINEITEM.replace("CREATE TABLE lineitem", "CREATE TABLE {name}")


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
    work = tempfile.mkdtemp(prefix="weir-myload-")
    os.chmod(work, 0o755)
    port, client, stop = mysql.start_mariadb(work)
    env = dict(os.environ, MY_PASSWORD=mysql.PASSWORD)
    try:
        csv, parquet = lineitem_parquet(args.scale, args.python)
        data = os.path.join(work, "data-in")
        os.makedirs(data)
        os.symlink(parquet, os.path.join(data, "lineitem.parquet"))
        url = f"mysql://weir@127.0.0.1:{port}/bench"
        sql = lambda q: subprocess.run(client + ["-N", "-e", q], check=True, capture_output=True, text=True).stdout.strip()  # noqa: E731
        for name in ("lineitem_weir", "lineitem_sling", "lineitem_floor"):
            sql(TABLE.format(name=name))
        d = project(work, "weir", url, data, "lineitem_weir", "mode: overwrite", password_env="MY_PASSWORD")
        runs = {"weir": ([weir, "run", "p.yaml", "--state", os.path.join(d, "state")], d, "lineitem_weir")}
        if args.sling:
            env["WEIR_BENCH_MY"] = f"mysql://weir:{mysql.PASSWORD}@127.0.0.1:{port}/bench"
            # Sling reads Parquet through the DuckDB CLI, which downloads an extension at run
            # time (no network here): Sling reads the same rows from the CSV, its own reader.
            runs["Sling " + args.sling_version + " (from the CSV)"] = (
                [args.sling, "run", "--src-stream", f"file://{csv}", "--src-options", "{ format: csv }",
                 "--tgt-conn", "WEIR_BENCH_MY", "--tgt-object", "bench.lineitem_sling", "--mode", "full-refresh"],
                work, "lineitem_sling")
        runs["floor: mariadb LOAD DATA LOCAL INFILE the CSV"] = (
            client + ["--local-infile=1", "-e",
                      f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE lineitem_floor FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' IGNORE 1 LINES"],
            work, "lineitem_floor")
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
        # The same values, not only as many rows.
        # (Sling re-creates its table with its own types: compared as decimal(20,2).)
        sums = {t: sql(f"SELECT concat_ws(' ', CAST(sum(l_extendedprice) AS decimal(20,2)), CAST(sum(l_quantity) AS decimal(20,2)), max(l_shipdate), sum(length(l_comment))) FROM {t}")
                for (_, _, t) in runs.values()}
        if len(set(sums.values())) != 1:
            sys.exit(f"the loads disagree on the values: {sums}")
        floor = statistics.median(s[0] for s in samples[next(k for k in runs if k.startswith("floor"))])
        print(f"\nmyload: TPC-H SF {args.scale} lineitem ({counts['lineitem_floor']} rows) Parquet into an empty MariaDB table; medians of {args.runs} runs\n")
        print("| loader | wall | peak RSS | × floor |\n|---|---:|---:|---:|")
        for name, s in samples.items():
            wall = statistics.median(x[0] for x in s)
            rss = statistics.median(x[1] for x in s)
            print(f"| {name} | {wall:.2f} s | {rss:.0f} MB | {wall / floor:.2f} |")

        # mymerge: 1% merged into the loaded table, with its primary key.
        sql("ALTER TABLE lineitem_weir ADD PRIMARY KEY (l_orderkey, l_linenumber)")
        update, n = update_parquet(parquet, args.python, work)
        m = project(work, "merge", url, os.path.dirname(update), "lineitem_weir",
                    "mode: merge, keys: [l_orderkey, l_linenumber]", password_env="MY_PASSWORD")
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
        print(f"\nmymerge: {n} rows (1%) merged by (l_orderkey, l_linenumber) into that table: {wall:.2f} s, {rss:.0f} MB (medians of {args.runs})")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
