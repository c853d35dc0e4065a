#!/usr/bin/env python3
"""XML → Parquet: weir against xmltodict and lxml, with a read that only tokenizes as the floor.

    bench/xml.py --weir target/release/weir --python bench/.venv/bin/python [--mb 1000] [--runs 3]

Generates `--mb` megabytes of IDoc-style XML once (`xmlgen.py`: ORDERS05 documents, items of
80 tags), then times, alternating, the same selection of 20 values per item (two from the
document's control record; `xml-pipeline.yaml`) written as zstd Parquet:

- weir (`format: xml`, the pipeline of `xml-pipeline.yaml`);
- xmltodict 1.0 as the story of issue 23 used it, streaming (`item_depth=3`: one IDOC at a
  time converted to dictionaries), the values picked from each dictionary, written by pyarrow;
- lxml 6 `iterparse` of the items, the same values by `findtext`, elements cleared as it
  goes, written by pyarrow;
- the floor: weir reading the same file with a record path that matches nothing, so that the
  reader only tokenizes it (the root element skipped whole: every event read, none decoded).

The row counts (and the sums of one column) must agree. Wall time is the median of `--runs`;
peak RSS from /usr/bin/time -v. Issue 23's workload.
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

PEER = r'''
import sys, pyarrow as pa, pyarrow.parquet as pq
src, out, tool = sys.argv[1], sys.argv[2], sys.argv[3]
COLS = ["doc", "partner", "item", "quantity", "unit", "uom", "weight", "price", "group", "plant", "qualifier",
        "material", "text", "wanted", "date", "lines", "ids", "z1", "z2", "segment"]
rows = {c: [] for c in COLS}
def emit(doc, partner, get, attr, lines, ids):
    v = dict(doc=doc, partner=partner, item=get("POSEX"), quantity=get("MENGE"), unit=attr("MENGE", "unit"),
             uom=get("MENEE"), weight=get("NTGEW"), price=get("VPREI"), group=get("MATKL"), plant=get("WERKS"),
             qualifier=get("E1EDP19/QUALF"), material=get("E1EDP19/IDTNR"), text=get("E1EDP19/KTEXT"),
             wanted=get("E1EDP20/WMENG"), date=get("E1EDP20/EDATU"), lines=lines, ids=ids, z1=get("ZF01"),
             z2=get("ZF02"), segment=attr(None, "SEGMENT"))
    for c in COLS:
        rows[c].append(v[c])
if tool == "lxml":
    from lxml import etree
    doc = partner = None
    for ev, el in etree.iterparse(src, events=("end",), tag=("E1EDP01", "EDI_DC40", "IDOC")):
        if el.tag == "EDI_DC40":
            doc, partner = el.findtext("DOCNUM"), el.findtext("SNDPRN")
        elif el.tag == "E1EDP01":
            get = el.findtext
            attr = lambda t, a: (el if t is None else el.find(t)).get(a)
            emit(doc, partner, get, attr, [t.findtext("TDLINE") for t in el.findall("E1EDPT2")],
                 [t.findtext("TDID") for t in el.findall("E1EDPT2")])
            el.clear()
        else:
            el.clear()
            doc = partner = None
else:
    import xmltodict
    def one(path, idoc):
        dc = idoc.get("EDI_DC40") or {}
        items = idoc.get("E1EDP01") or []
        if isinstance(items, dict):
            items = [items]
        for it in items:
            def get(p, it=it):
                v = it
                for s in p.split("/"):
                    v = v.get(s) if isinstance(v, dict) else None
                    if v is None:
                        return None
                return v.get("#text") if isinstance(v, dict) else v
            def attr(t, a, it=it):
                v = it if t is None else it.get(t)
                return v.get("@" + a) if isinstance(v, dict) else None
            texts = it.get("E1EDPT2") or []
            if isinstance(texts, dict):
                texts = [texts]
            emit(dc.get("DOCNUM"), dc.get("SNDPRN"), get, attr, [t.get("TDLINE") for t in texts],
                 [t.get("TDID") for t in texts])
        return True
    with open(src, "rb") as f:
        xmltodict.parse(f, item_depth=2, item_callback=one)
from decimal import Decimal
dec = lambda s: None if s is None else Decimal(s.strip())
t = pa.table({
    **{c: pa.array(rows[c], pa.string()) for c in COLS if c not in ("quantity", "weight", "price", "wanted", "lines", "ids")},
    "quantity": pa.array([dec(x) for x in rows["quantity"]], pa.decimal128(12, 3)),
    "weight": pa.array([dec(x) for x in rows["weight"]], pa.decimal128(10, 2)),
    "price": pa.array([dec(x) for x in rows["price"]], pa.decimal128(12, 2)),
    "wanted": pa.array([None if x is None else int(x) for x in rows["wanted"]], pa.int32()),
    "lines": pa.array(rows["lines"], pa.list_(pa.string())),
    "ids": pa.array(rows["ids"], pa.list_(pa.string())),
})
pq.write_table(t, out, compression="zstd")
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--python", required=True, help="a Python with pyarrow, lxml and xmltodict")
    ap.add_argument("--mb", type=float, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    weir = os.path.abspath(args.weir)
    data = os.path.join(HERE, "data", f"xml-{args.mb:g}")
    src = os.path.join(data, "orders.xml")
    if not os.path.exists(src):
        os.makedirs(data, exist_ok=True)
        subprocess.run([args.python, os.path.join(HERE, "xmlgen.py"), src + ".tmp", "--mb", str(args.mb)], check=True)
        os.rename(src + ".tmp", src)
    work = tempfile.mkdtemp(prefix="weir-xml-")
    try:
        os.symlink(data, os.path.join(work, "raw"))
        pipeline = open(os.path.join(HERE, "xml-pipeline.yaml")).read()
        with open(os.path.join(work, "p.yaml"), "w") as f:
            f.write(pipeline)
        floor = os.path.join(work, "floor")
        os.makedirs(floor)
        os.symlink(data, os.path.join(floor, "raw"))
        with open(os.path.join(floor, "p.yaml"), "w") as f:
            f.write(pipeline.replace("record: /ORDERS05/IDOC/E1EDP01", "record: /NOTHING/MATCHES"))
        peer = os.path.join(work, "peer.py")
        with open(peer, "w") as f:
            f.write(PEER)
        peers = os.path.join(work, "peers")
        os.makedirs(peers)
        runs = {
            "weir": ([weir, "run", "p.yaml", "--state", "state"], work),
            "lxml 6 iterparse, same selection": ([args.python, peer, src, os.path.join(peers, "lxml.parquet"), "lxml"], peers),
            "xmltodict 1.0 (streaming), same selection": (
                [args.python, peer, src, os.path.join(peers, "xmltodict.parquet"), "xmltodict"], peers),
            "floor: tokenize only (weir, no record matches)": ([weir, "run", "p.yaml", "--state", "state"], floor),
        }
        samples = {k: [] for k in runs}
        for r in range(args.runs):
            for name, (cmd, cwd) in runs.items():
                # xmltodict takes minutes a run: once is enough to place it.
                if name.startswith("xmltodict") and r > 0:
                    continue
                shutil.rmtree(os.path.join(cwd, "lake"), ignore_errors=True)
                shutil.rmtree(os.path.join(cwd, "state"), ignore_errors=True)
                samples[name].append(pg.timed(cmd, cwd=cwd))
        check = f"""
import pyarrow.dataset as ds, pyarrow.compute as pc, sys
for p in sys.argv[1:]:
    t = ds.dataset(p, format="parquet").to_table()
    print(t.num_rows, pc.sum(t["quantity"]).as_py(), pc.sum(pc.list_value_length(t["lines"])).as_py())
"""
        out = subprocess.run([args.python, "-c", check, os.path.join(work, "lake", "items"),
                              os.path.join(peers, "lxml.parquet"), os.path.join(peers, "xmltodict.parquet")],
                             check=True, capture_output=True, text=True).stdout.split("\n")
        if len(set(x for x in out if x)) != 1:
            sys.exit(f"the outputs disagree (rows, sum of quantity, text lines): {out}")
        size = os.path.getsize(src) / 1e6
        weir_wall = statistics.median(x[0] for x in samples["weir"])
        print(f"\nxml: {size:.0f} MB of IDoc-style XML ({out[0].split()[0]} items, 80 tags each, 20 values selected) → zstd Parquet; medians of {args.runs} runs (xmltodict: 1)\n")
        print("| reader | wall | peak RSS | × weir's time |\n|---|---:|---:|---:|")
        walls = {}
        for name, s in samples.items():
            wall = walls[name] = statistics.median(x[0] for x in s)
            rss = statistics.median(x[1] for x in s)
            print(f"| {name} | {wall:.2f} s | {rss:.0f} MB | {wall / weir_wall:.2f} |")
        floor = next(w for k, w in walls.items() if k.startswith("floor"))
        print(f"\nweir: {walls[next(k for k in walls if k.startswith('xmltodict'))] / weir_wall:.1f}x faster than xmltodict, "
              f"{walls[next(k for k in walls if k.startswith('lxml'))] / weir_wall:.1f}x faster than lxml, "
              f"{weir_wall / floor:.2f}x the tokenize-only floor")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
