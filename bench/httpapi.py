#!/usr/bin/env python3
"""HTTP API → Parquet: weir against the floor, the same pages fetched one after another.

    bench/httpapi.py --weir target/release/weir --python bench/.venv/bin/python [--pages 2000] [--runs 3]

A server in this process (Python's threading HTTP server, HTTP/1.1 keep-alive, on a loopback
port) answers `GET /v1/items?page=N&per_page=100` with 100 records of a JSON page (ids,
text, numbers, a timestamp, a nested object, a list) after waiting 5 ms, the latency of the
issue's workload; the page after the last is empty. Two variants: no rate limit, and
`rate_limit: { requests: 100, per: 1s }` (which binds: 5 ms a page would be 200 a second).

- weir: `page` pagination into zstd Parquet (the pipeline is written by this script);
- the floor: a client that only fetches the same pages one after another on one keep-alive
  connection at the allowed rate (the same rule as weir: a request goes out when the one
  `requests` before it was answered at least `per` ago) and reads their bodies; it parses
  nothing and writes nothing.

Both ask for the same pages (2,001 by default). weir's rows are checked (count and sum of ids). Wall time
is the median of `--runs`; peak RSS from /usr/bin/time -v. Issue 23's `http` workload: goal
≤ 1.2× the floor.
"""
import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pg  # noqa: E402

PER_PAGE = 100
LATENCY = 0.005

FLOOR = r'''
import http.client, sys, time, collections
port, pages, n, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port)
answered = collections.deque()
total = 0
for page in range(1, pages + 2):
    if n and len(answered) == n:
        wait = answered[0] + per - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        answered.popleft()
    c.request("GET", f"/v1/items?page={page}&per_page=100")
    r = c.getresponse()
    body = r.read()
    answered.append(time.monotonic())
    assert r.status == 200, r.status
    total += len(body)
print(total)
'''

PIPELINE = """stores:
  api: {{ url: "http://127.0.0.1:{port}/v1/" }}
  lake: {{ url: "file://lake" }}
tasks:
  items:
    extract:
      store: api
      http:
        path: items
        records: data
        paginate: {{ page: {{ param: page, size_param: per_page, size: 100 }} }}
{rate}      schema: {{ updated_at: timestamp with time zone }}
  out: {{ load: {{ from: items, store: lake, path: items/ }} }}
"""


def pages_of(n):
    out = []
    for p in range(n):
        recs = []
        for i in range(p * PER_PAGE + 1, (p + 1) * PER_PAGE + 1):
            recs.append({
                "id": i,
                "email": f"user{i}@example.com",
                "name": f"Customer number {i}",
                "status": ["active", "paused", "closed"][i % 3],
                "balance": round(i * 1.37 % 10000, 2),
                "visits": i % 97,
                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_760_000_000 + i * 13)),
                "address": {"city": f"City {i % 500}", "zip": f"{i % 100000:05d}", "country": "PL"},
                "tags": [f"t{t}" for t in range(i % 4)],
            })
        out.append(json.dumps({"data": recs, "page": p + 1}).encode())
    out.append(json.dumps({"data": [], "page": n + 1}).encode())
    return out


def serve(pages):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_GET(self):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            page = int(q.get("page", ["1"])[0])
            time.sleep(LATENCY)
            body = pages[min(page, len(pages)) - 1]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--python", required=True, help="a Python with pyarrow")
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    weir = os.path.abspath(args.weir)
    pages = pages_of(args.pages)
    srv = serve(pages)
    port = srv.server_address[1]
    work = tempfile.mkdtemp(prefix="weir-http-")
    try:
        floor = os.path.join(work, "floor.py")
        with open(floor, "w") as f:
            f.write(FLOOR)
        results = []
        for label, rate, n, per in [
            ("no rate limit", "", 0, 0.0),
            ("rate_limit 100 per 1s", "        rate_limit: { requests: 100, per: 1s }\n", 100, 1.0),
        ]:
            d = os.path.join(work, str(n))
            os.makedirs(d)
            with open(os.path.join(d, "p.yaml"), "w") as f:
                f.write(PIPELINE.format(port=port, rate=rate))
            runs = {
                "weir": [weir, "run", "p.yaml", "--state", "state"],
                "floor: fetch the pages one after another": [args.python, floor, str(port), str(args.pages), str(n), str(per)],
            }
            samples = {k: [] for k in runs}
            for _ in range(args.runs):
                for name, cmd in runs.items():
                    if name == "weir":
                        shutil.rmtree(os.path.join(d, "lake"), ignore_errors=True)
                        shutil.rmtree(os.path.join(d, "state"), ignore_errors=True)
                    # The rate limit's window starts afresh for each.
                    time.sleep(per)
                    samples[name].append(pg.timed(cmd, cwd=d))
            check = """
import pyarrow.dataset as ds, pyarrow.compute as pc, sys
t = ds.dataset(sys.argv[1], format="parquet").to_table()
print(t.num_rows, pc.sum(t["id"]).as_py())
"""
            out = subprocess.run([args.python, "-c", check, os.path.join(d, "lake", "items")], check=True,
                                 capture_output=True, text=True).stdout.split()
            n_rec = args.pages * PER_PAGE
            if out != [str(n_rec), str(n_rec * (n_rec + 1) // 2)]:
                sys.exit(f"weir's output is not the API's records: {out}")
            results.append((label, samples))
        mb = sum(len(p) for p in pages) / 1e6
        print(f"\nhttp: {args.pages * PER_PAGE:,} records in {args.pages:,} pages of {PER_PAGE} (+1 empty), "
              f"{mb:.0f} MB of JSON, {LATENCY * 1000:.0f} ms a page, loopback → zstd Parquet; medians of {args.runs} runs\n")
        print("| variant | reader | wall | peak RSS | × the floor |\n|---|---|---:|---:|---:|")
        for label, samples in results:
            fl = statistics.median(x[0] for x in samples["floor: fetch the pages one after another"])
            for name, s in samples.items():
                wall = statistics.median(x[0] for x in s)
                rss = statistics.median(x[1] for x in s)
                print(f"| {label} | {name} | {wall:.2f} s | {rss:.0f} MB | {wall / fl:.2f} |")
    finally:
        srv.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
