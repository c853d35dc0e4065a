#!/usr/bin/env python3
"""Deterministic data for the demo pipeline (pipelines/daily_orders.yaml).

    python3 examples/shop/generate.py                       # the committed demo data
    python3 examples/shop/generate.py --orders 5000000 --out /tmp/shop-5m   # benchmark scale

Writes:
  orders/orders-YYYY-MM-DD.csv   one file per day (CSV, with messy `status` values and
                                 empty discounts to clean)
  customers.ndjson               newline-delimited JSON
  products.parquet               Parquet (needs pyarrow)

The same arguments always produce the same bytes (seeded RNG, no clock).
"""

import argparse
import csv
import datetime as dt
import json
import os
import random

SEGMENTS = ["consumer", "smb", "enterprise"]
REGIONS = ["north", "south", "east", "west"]
CATEGORIES = ["books", "garden", "kitchen", "outdoor", "toys", "tools"]
STATUSES = ["new", "paid", "shipped", "cancelled"]
MESSY = {"paid": ["paid", "Paid", " PAID "], "shipped": ["shipped", "SHIPPED", "Shipped "], "new": ["new"], "cancelled": ["cancelled", "Cancelled"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=6000)
    ap.add_argument("--customers", type=int, default=500)
    ap.add_argument("--products", type=int, default=120)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--seed", type=int, default=20261101)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.out, "orders"), exist_ok=True)

    start = dt.date(2026, 11, 1)
    with open(os.path.join(a.out, "customers.ndjson"), "w") as f:
        for c in range(1, a.customers + 1):
            signup = start - dt.timedelta(days=rng.randint(1, 900))
            rec = {
                "customer_id": c,
                "name": f"Customer {c:05d}",
                "email": f"customer{c}@example.com",
                "segment": rng.choice(SEGMENTS),
                "region": rng.choice(REGIONS),
                "signup_date": signup.isoformat(),
            }
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")

    import pyarrow as pa
    import pyarrow.parquet as pq
    from decimal import Decimal

    products = {"product_id": [], "sku": [], "name": [], "category": [], "list_price": [], "active": []}
    prices = {}
    for p in range(1, a.products + 1):
        price = Decimal(rng.randint(199, 19999)) / 100
        prices[p] = price
        products["product_id"].append(p)
        products["sku"].append(f"SKU-{p:05d}")
        products["name"].append(f"Product {p}")
        products["category"].append(rng.choice(CATEGORIES))
        products["list_price"].append(price)
        products["active"].append(rng.random() > 0.05)
    table = pa.table(
        products,
        schema=pa.schema([
            ("product_id", pa.int64()), ("sku", pa.string()), ("name", pa.string()),
            ("category", pa.string()), ("list_price", pa.decimal128(10, 2)), ("active", pa.bool_()),
        ]),
    )
    pq.write_table(table, os.path.join(a.out, "products.parquet"), compression="zstd")

    per_day = a.orders // a.days
    order_id = 100000
    for d in range(a.days):
        day = start + dt.timedelta(days=d)
        n = per_day if d < a.days - 1 else a.orders - per_day * (a.days - 1)
        path = os.path.join(a.out, "orders", f"orders-{day.isoformat()}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["order_id", "customer_id", "product_id", "quantity", "unit_price", "discount", "status", "ordered_at"])
            for _ in range(n):
                order_id += 1
                pid = rng.randint(1, a.products)
                status = rng.choices(STATUSES, weights=[10, 40, 45, 5])[0]
                discount = "" if rng.random() < 0.6 else f"{rng.choice([0.05, 0.1, 0.15, 0.2]):.2f}"
                ts = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=rng.randint(0, 86399))
                w.writerow([
                    order_id,
                    rng.randint(1, a.customers),
                    pid,
                    rng.choices([1, 2, 3, 4, 5], weights=[50, 25, 12, 8, 5])[0],
                    f"{prices[pid]:.2f}",
                    discount,
                    rng.choice(MESSY[status]),
                    ts.strftime("%Y-%m-%d %H:%M:%S"),
                ])


if __name__ == "__main__":
    main()
