#!/usr/bin/env python3
"""How late `weir serve` starts scheduled runs while its webhook receiver fails.

    bench/tick_lateness.py --weir target/release/weir [--minutes 10]

Three pipelines tick every 2 seconds (6-field cron); one of them fails on every run, so
every one of its runs raises a `failure` alert. The webhook receiver answers HTTP 500 during
even minutes (counted from the start) and 200 during odd ones, so alerts pile up and are
retried while runs go on. At the end the ticks table says, for every tick, when its run was
started: lateness = recorded_at - tick_at. Printed: ticks handled, how many ran and how many
were skipped, lateness p50 / p99 / max, and what became of the alerts.
"""
import argparse
import http.server
import os
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from datetime import datetime


def parse(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    args = ap.parse_args()
    start = time.time()
    hits = {"ok": 0, "fail": 0}

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            failing = int((time.time() - start) // 60) % 2 == 0
            hits["fail" if failing else "ok"] += 1
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    work = tempfile.mkdtemp(prefix="weir-ticks-")
    os.makedirs(f"{work}/p")
    os.makedirs(f"{work}/data")
    with open(f"{work}/data/a.csv", "w") as f:
        f.write("x\n" + "\n".join(str(i) for i in range(100)) + "\n")
    for name, task in [("steady1", "mart"), ("steady2", "mart"), ("failing", "boom")]:
        with open(f"{work}/p/{name}.yaml", "w") as f:
            f.write(
                f'schedule: {{ cron: "*/2 * * * * *" }}\n'
                f'notify: [{{ url: "{url}" }}]\n'
                'stores:\n  src: { url: "file://../data" }\n  out: { url: "file://../out" }\n'
                f'tasks:\n  a:\n    extract: {{ store: src, path: a.csv }}\n'
                f'  {task}:\n    load: {{ from: a, store: out, path: {name}/ }}\n'
            )
    env = dict(os.environ, WEIR_FAILPOINT="task_start@boom=error")
    daemon = subprocess.Popen(
        [args.weir, "serve", "p", "--listen", "127.0.0.1:0"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(args.minutes * 60)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=120)

    db = sqlite3.connect(f"{work}/p/.weir/state.db")
    ticks = db.execute("SELECT pipeline, tick_at, action, recorded_at FROM ticks").fetchall()
    late = sorted((parse(r) - parse(t)).total_seconds() for _, t, a, r in ticks if a == "ran")
    skipped = sum(1 for _, _, a, _ in ticks if a.startswith("skipped"))
    pct = lambda q: late[min(len(late) - 1, int(q * len(late)))] if late else float("nan")
    alerts = dict(db.execute("SELECT status, count(*) FROM alerts GROUP BY status").fetchall())
    runs = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    print(f"{args.minutes:g} minutes, 3 pipelines every 2 s, the receiver failing every other minute")
    print(f"ticks handled: {len(ticks)}, ran: {len(late)}, skipped: {skipped}; runs: {runs}")
    print(f"lateness (run start - tick): p50 {pct(0.5) * 1000:.0f} ms, p99 {pct(0.99) * 1000:.0f} ms, max {late[-1] * 1000 if late else float('nan'):.0f} ms")
    print(f"alerts: {alerts}; receiver answers: {hits['ok']} ok, {hits['fail']} refused")


if __name__ == "__main__":
    main()
