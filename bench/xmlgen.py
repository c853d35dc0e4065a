#!/usr/bin/env python3
"""IDoc-style XML for the `xml` benchmark and the large-file test: ORDERS05 documents, each an
EDI_DC40 control record and items (E1EDP01) of 80 tags, a few of them nested, repeated text
lines, attributes, an entity here and there.

    bench/xmlgen.py OUT.xml --mb 1000 [--seed 1]

Writes about `--mb` megabytes. Deterministic for a seed.
"""
import argparse
import random


def item(r, doc, n):
    tags = []
    tags.append(f"<POSEX>{n * 10:06d}</POSEX>")
    tags.append(f'<MENGE unit="{r.choice(["KG", "ST", "L"])}">{r.randint(1, 99999) / 1000:.3f}</MENGE>')
    tags.append(f"<MENEE>{r.choice(['KGM', 'PCE', 'LTR'])}</MENEE>")
    tags.append(f"<NTGEW>{r.randint(1, 9999) / 100:.2f}</NTGEW>")
    tags.append(f"<VPREI>{r.randint(1, 999999) / 100:.2f}</VPREI>")
    tags.append(f"<MATKL>M{r.randint(100, 999)}</MATKL>")
    tags.append(f"<WERKS>{r.randint(1000, 1999)}</WERKS>")
    tags.append(f"<E1EDP19><QUALF>001</QUALF><IDTNR>MAT-{r.randint(1, 10**6)}</IDTNR><KTEXT>Part &amp; kit {n}</KTEXT></E1EDP19>")
    tags.append(f"<E1EDP20><WMENG>{r.randint(1, 500)}</WMENG><EDATU>2026{r.randint(1, 12):02d}{r.randint(1, 28):02d}</EDATU></E1EDP20>")
    for k in range(r.randint(1, 3)):
        tags.append(f"<E1EDPT2><TDID>Z{k}</TDID><TDLINE>line {k} of item {n}</TDLINE></E1EDPT2>")
    # Filler: the tags nobody selects (about 80 per item in all).
    for k in range(80 - len(tags)):
        tags.append(f"<ZF{k:02d}>{r.randint(0, 10**9)}</ZF{k:02d}>")
    return f'<E1EDP01 SEGMENT="1">{"".join(tags)}</E1EDP01>\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    r = random.Random(args.seed)
    limit = int(args.mb * 1e6)
    written = 0
    doc = 0
    with open(args.out, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<ORDERS05>\n')
        while written < limit:
            doc += 1
            parts = [f'<IDOC BEGIN="1"><EDI_DC40 SEGMENT="1"><TABNAM>EDI_DC40</TABNAM><DOCNUM>{doc:016d}</DOCNUM>'
                     f"<MESTYP>ORDERS</MESTYP><SNDPRN>PARTNER{doc % 97}</SNDPRN></EDI_DC40>\n"]
            for n in range(1, r.randint(2, 20)):
                parts.append(item(r, doc, n))
            parts.append("</IDOC>\n")
            text = "".join(parts)
            f.write(text)
            written += len(text)
        f.write("</ORDERS05>\n")


if __name__ == "__main__":
    main()
