#!/usr/bin/env python3
"""MariaDB → zstd Parquet: weir against ConnectorX, with the `mariadb` client's own read to
/dev/null as the floor (the server's cost of producing the rows, and the client's of taking them).

    bench/mysql.py --weir target/release/weir --python bench/.venv/bin/python [--scale 1] [--runs 3]

Starts its own MariaDB (Debian's, on a loopback port; as the `mysql` user when run as root),
loads TPC-H `lineitem` at `--scale` (tpchgen-cli, deterministic; the same CSV as bench/pg.py)
and times, alternating: weir with 1 and 2 parts (`partition: { column: l_orderkey, parts: 2 }`),
ConnectorX 0.4 with 1 and 2 partitions (written with pyarrow, zstd), and the floor. Wall time
is the median of `--runs`; peak RSS from /usr/bin/time -v. Issue 20's `mysql` workload.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg import lineitem_csv, measure, reader_runs  # noqa: E402

PASSWORD = "bench"

LINEITEM = """CREATE TABLE lineitem (
  l_orderkey bigint, l_partkey bigint, l_suppkey bigint, l_linenumber integer,
  l_quantity decimal(15,2), l_extendedprice decimal(15,2), l_discount decimal(15,2), l_tax decimal(15,2),
  l_returnflag char(1), l_linestatus char(1), l_shipdate date, l_commitdate date, l_receiptdate date,
  l_shipinstruct char(25), l_shipmode char(10), l_comment varchar(44), KEY (l_orderkey)) ENGINE=InnoDB"""


def start_mariadb(work):
    """Debian's MariaDB on a loopback port, data in `work`: (port, client command, stop)."""
    if not shutil.which("mariadb-install-db"):
        sys.exit("MariaDB is not installed (Debian: apt-get install mariadb-server mariadb-client)")
    root = os.geteuid() == 0
    user = ["--user=mysql"] if root else []
    if root:
        subprocess.run(["chown", "-R", "mysql:mysql", work], check=True)
    data = os.path.join(work, "data")
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                    "--skip-test-db"] + user, check=True, capture_output=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    sock = os.path.join(work, "sock")
    server = subprocess.Popen(["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
                               "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0",
                               "--innodb-buffer-pool-size=2G", "--character-set-server=utf8mb4", f"--log-error={work}/log",
                               f"--pid-file={work}/pid", "--local-infile=1"] + user,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rootc = ["mariadb", "--no-defaults", "-uroot", f"--socket={sock}"]
    for _ in range(600):
        if subprocess.run(rootc + ["-e", "SELECT 1"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    subprocess.run(rootc + ["-e", f"CREATE USER weir@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO weir@'127.0.0.1'; CREATE DATABASE bench"],
                   check=True, capture_output=True)
    client = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-uweir", f"-p{PASSWORD}", "bench"]

    def stop():
        server.kill()
        server.wait()

    return port, client, stop


def load_lineitem(scale, python, client):
    """TPC-H `lineitem` at `scale` loaded into the server; its row count."""
    csv = lineitem_csv(scale, python)
    print("loading lineitem into MariaDB ...", flush=True)
    subprocess.run(client + ["-e", LINEITEM], check=True, capture_output=True)
    subprocess.run(client + ["--local-infile=1", "-e",
                             f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE lineitem FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' IGNORE 1 LINES"],
                   check=True, capture_output=True)
    subprocess.run(client + ["-e", "ANALYZE TABLE lineitem"], check=True, capture_output=True)
    return subprocess.run(client + ["-N", "-e", "SELECT count(*) FROM lineitem"], check=True, capture_output=True,
                          text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--python", required=True, help="a Python with connectorx, pyarrow and tpchgen-cli")
    ap.add_argument("--scale", default="1")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    weir = os.path.abspath(args.weir)
    work = tempfile.mkdtemp(prefix="weir-mybench-")
    os.chmod(work, 0o777)
    port, client, stop = start_mariadb(work)
    env = dict(os.environ, MY_PASSWORD=PASSWORD)
    try:
        rows = load_lineitem(args.scale, args.python, client)
        url = f"mysql://weir@127.0.0.1:{port}/bench"
        runs = reader_runs(work, weir, args.python, url, "MY_PASSWORD", f"mysql://weir:{PASSWORD}@127.0.0.1:{port}/bench")
        floor = os.path.join(work, "floor.sh")
        with open(floor, "w") as f:
            f.write(" ".join(client) + " --quick -N -B -e 'SELECT * FROM lineitem' > /dev/null\n")
        runs["floor: mariadb --quick SELECT * to /dev/null"] = (["sh", floor], work)
        measure(runs, env, args.runs, f"TPC-H SF {args.scale} lineitem ({rows} rows) from MariaDB to zstd Parquet")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
