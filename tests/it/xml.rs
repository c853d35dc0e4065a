//! XML files as a source: a corpus (namespaces, attributes, CDATA, entities, self-closing and
//! empty elements, repeated and missing fields, header values, gzip) compared with an
//! independent parse by Python's `xml.etree`; malformed files in every `bad_rows` mode; path
//! errors at validate (snapshot); a 200 MB file in bounded memory; `new_files`.

use crate::common::*;

/// The corpus: two documents (one gzipped) of IDoc-style records.
const DOC_A: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ORDERS05 xmlns:sap="urn:sap" xmlns:other="urn:other">
  <IDOC BEGIN="1">
    <EDI_DC40><DOCNUM>0000123</DOCNUM><SNDPRN>ACME &amp; Sons</SNDPRN></EDI_DC40>
    <E1EDP01 SEGMENT="1">
      <POSEX>000010</POSEX>
      <MENGE unit="KG"> 12.500 </MENGE>
      <sap:MAT>S-1</sap:MAT>
      <other:MAT>not this one</other:MAT>
      <E1EDP19><IDTNR>MAT-1 &lt;a&gt; &#233;t&#xE9;</IDTNR></E1EDP19>
      <E1EDPT2><TDLINE>first</TDLINE></E1EDPT2>
      <E1EDPT2><TDLINE><![CDATA[<second> & "third"]]></TDLINE></E1EDPT2>
      <E1EDPT2/>
      <NOISE><POSEX>nested, not the item's</POSEX><B>2</B></NOISE>
      <!-- a comment -->
    </E1EDP01>
    <E1EDP01 SEGMENT="2">
      <POSEX>000020</POSEX>
      <MENGE unit="ST">3</MENGE>
      <E1EDP19/>
      <E1EDPT2><TDLINE></TDLINE></E1EDPT2>
    </E1EDP01>
  </IDOC>
  <IDOC>
    <E1EDP01><POSEX>000030</POSEX><MENGE>-0.001</MENGE></E1EDP01>
    <E1EDP01/>
  </IDOC>
</ORDERS05>
"#;

const DOC_B: &str = r#"<ORDERS05><IDOC BEGIN="7"><EDI_DC40><DOCNUM>777</DOCNUM></EDI_DC40>
<E1EDP01 SEGMENT="9"><POSEX>1</POSEX><MENGE unit="L">1000.5</MENGE><E1EDP19><IDTNR>ż🐢</IDTNR></E1EDP19></E1EDP01>
</IDOC></ORDERS05>"#;

const FIELDS: &str = r#"{ doc: /ORDERS05/IDOC/EDI_DC40/DOCNUM, partner: /ORDERS05/IDOC/EDI_DC40/SNDPRN, begin: /ORDERS05/IDOC/@BEGIN, segment: "@SEGMENT", item: POSEX, quantity: MENGE, unit: MENGE/@unit, mat: "sap:MAT", material: E1EDP19/IDTNR, texts: "E1EDPT2[]/TDLINE" }"#;

fn project(extra: &str) -> Project {
    project_of("*.xml", extra)
}

fn project_of(path: &str, extra: &str) -> Project {
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n  raw: {{ url: \"file://raw\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  items:\n    extract:\n      store: raw\n      path: \"{path}\"\n      format: xml\n      xml: {{ record: /ORDERS05/IDOC/E1EDP01, fields: {FIELDS}, namespaces: {{ sap: \"urn:sap\" }} }}\n{extra}  out:\n    load: {{ from: items, store: lake, path: items/ }}\n"
        ),
    );
    p
}

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// The rows of the corpus as `xml.etree` reads them, and weir's, compared in Python.
const COMPARE: &str = r#"
import gzip, json, sys, xml.etree.ElementTree as ET
import pyarrow.parquet as pq, pyarrow.dataset as ds
from decimal import Decimal

def text(e):
    # An element without text is NULL, as a missing one.
    return None if e is None or not e.text else e.text

want = []
for path in sys.argv[2:]:
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    root = ET.fromstring(data)
    for idoc in root.findall("IDOC"):
        dc = idoc.find("EDI_DC40")
        for rec in idoc.findall("E1EDP01"):
            q = text(rec.find("MENGE"))
            menge = rec.find("MENGE")
            want.append({
                "doc": text(dc.find("DOCNUM")) if dc is not None else None,
                "partner": text(dc.find("SNDPRN")) if dc is not None else None,
                "begin": idoc.get("BEGIN"),
                "segment": rec.get("SEGMENT"),
                "item": text(rec.find("POSEX")),
                "quantity": str(Decimal(q.strip()).quantize(Decimal("0.001"))) if q else None,
                "unit": menge.get("unit") if menge is not None else None,
                "mat": text(rec.find("{urn:sap}MAT")),
                "material": text(rec.find("E1EDP19/IDTNR")),
                "texts": [text(t.find("TDLINE")) for t in rec.findall("E1EDPT2")],
            })
got = ds.dataset(sys.argv[1], format="parquet").to_table().to_pylist()
for r in got:
    r["quantity"] = None if r["quantity"] is None else str(r["quantity"])
key = lambda r: json.dumps(r, sort_keys=True, default=str)
want.sort(key=key)
got.sort(key=key)
if want != got:
    print("want:", json.dumps(want, indent=1, default=str))
    print("got:", json.dumps(got, indent=1, default=str))
    sys.exit(1)
print(len(got), "rows equal")
"#;

#[test]
fn xml_rows_equal_an_independent_parse() {
    let Some(python) = test_python() else { return };
    // Gzipped files (the compression is the path's).
    let p = project_of(
        "*.xml.gz",
        "      schema: { quantity: \"decimal(15,3)\" }\n      incremental: { new_files: true }\n",
    );
    let yaml =
        std::fs::read_to_string(p.join("p.yaml")).unwrap().replace("path: items/ }", "path: items/, mode: append }");
    p.write("p.yaml", yaml);
    std::fs::create_dir_all(p.join("raw")).unwrap();
    std::fs::write(p.join("raw/a.xml.gz"), gzip(DOC_A)).unwrap();
    std::fs::write(p.join("raw/b.xml.gz"), gzip(DOC_B)).unwrap();
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    p.write("compare.py", COMPARE);
    let check = |files: &[&str]| {
        let mut args = vec!["compare.py".to_string(), p.join("lake/items").display().to_string()];
        args.extend(files.iter().map(|f| p.join(f).display().to_string()));
        let out = std::process::Command::new(&python).args(&args).current_dir(p.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(check(&["raw/a.xml.gz", "raw/b.xml.gz"]).trim(), "5 rows equal");
    // `weir plan` shows the columns and their types.
    let plan = p.weir(&["plan", "p.yaml"]);
    plan.ok();
    assert!(plan.stdout.contains("quantity") && plan.stdout.contains("decimal(15,3)"), "{}", plan.stdout);
    // A new file is read on the next run; the others are not read again.
    std::fs::write(p.join("raw/c.xml.gz"), gzip(&DOC_B.replace("777", "778"))).unwrap();
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let items = report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "out").unwrap().clone();
    assert_eq!(items["rows_out"], 1, "{items}");
}

/// A malformed file: each kind of malformed record in each `bad_rows` mode. `fail` names the
/// first (a value before a structural error in the file comes first); `skip` loads the good
/// records; `quarantine` sets the bad ones aside with file, line and reason.
#[test]
fn malformed_xml_in_every_bad_rows_mode() {
    let bad = "<ORDERS05><IDOC>\n\
<E1EDP01><POSEX>1</POSEX><MENGE>1.5</MENGE></E1EDP01>\n\
<E1EDP01><POSEX>2</POSEX><MENGE>abc</MENGE></E1EDP01>\n\
<E1EDP01><POSEX>3</POSEX><POSEX>3b</POSEX></E1EDP01>\n\
<E1EDP01><POSEX>4</POSEX><MENGE>&bogus;</MENGE></E1EDP01>\n\
<E1EDP01><POSEX>5</POSEX></WRONG></E1EDP01>\n\
<E1EDP01><POSEX>6</POSEX><MENGE>12345678901234567</MENGE></E1EDP01>\n\
<E1EDP01><POSEX>7</POSEX></E1EDP01>\n\
<E1EDP01><POSEX>8</POSEX>\n";
    let items = |p: &Project| -> Vec<String> {
        let mut v: Vec<String> = read_rows(&p.join("lake/items")).iter().map(|r| r["item"].clone()).collect();
        v.sort();
        v
    };
    // fail
    let p = project("      schema: { quantity: \"decimal(15,3)\" }\n");
    p.write("raw/bad.xml", bad);
    let r = p.weir(&["run", "p.yaml"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("bad.xml:3: column quantity: `abc` is not a decimal(15,3)"), "{}", r.stderr);
    assert!(parquet_files(&p.join("lake/items")).is_empty(), "nothing was loaded");
    // skip
    let p = project("      schema: { quantity: \"decimal(15,3)\" }\n      bad_rows: skip\n");
    p.write("raw/bad.xml", bad);
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    assert_eq!(items(&p), ["1", "7"]);
    // quarantine
    let p = project(
        "      schema: { quantity: \"decimal(15,3)\" }\n      bad_rows: quarantine\n    quarantine: { store: lake }\n",
    );
    p.write("raw/bad.xml", bad);
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(items(&p), ["1", "7"]);
    let q = read_rows(&p.join("lake/_quarantine"));
    let mut reasons: Vec<String> = q.iter().map(|r| format!("{} {}", r["line"], r["reason"])).collect();
    reasons.sort();
    let text = reasons.join("\n");
    for want in [
        "3 `abc` is not a decimal(15,3)",
        "4 the value of column `item` occurs more than once",
        "5 unknown entity `&bogus;`",
        "6 malformed XML: end tag `</WRONG>` where `</E1EDP01>` was expected",
        "7 `12345678901234567` is not a decimal(15,3)",
        "9 the file ends inside a record",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert_eq!(q.len(), 6, "{text}");
}

/// Paths that cannot be read are reported at validate, all at once, where they are written.
#[test]
fn xml_paths_are_checked_at_validate() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  a:\n    extract:\n      store: raw\n      path: \"*.xml\"\n      xml: { record: ORDERS/ORDER, fields: { x: \"a[]/b[]\", y: \"n:A\" } }\n  d:\n    extract:\n      store: raw\n      path: \"*.xml\"\n      xml: { record: /ORDERS/ORDER, fields: { z: /ORDERS/ORDER/ID, w: /ORDERS, v: \"/ORDERS/HEAD[]/X\", ok: /ORDERS/@id } }\n  e:\n    extract: { store: raw, path: \"*.xml\", xml: { record: /ORDERS/ORDER, fields: { id: ID } }, schema: { nope: integer } }\n  out_d: { load: { from: d, store: lake, path: d/ } }\n  out_e: { load: { from: e, store: lake, path: e/ } }\n  b:\n    extract: { store: raw, path: \"*.xml\" }\n  c:\n    extract: { store: raw, path: \"*.csv\", xml: { record: /A/B, fields: { x: C } } }\n  out: { load: { from: a, store: lake, path: a/ } }\n  out_b: { load: { from: b, store: lake, path: b/ } }\n  out_c: { load: { from: c, store: lake, path: c/ } }\n",
    );
    p.write("raw/x.xml", "<ORDERS/>");
    p.write("raw/x.csv", "a\n1\n");
    let r = p.weir(&["validate", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    insta::assert_snapshot!(normalize(&r.stderr, p.path()));
}

/// A 200 MB file (IDoc-style, 80 tags per item, 20 selected) is read in bounded memory.
#[test]
fn a_large_xml_file_is_read_in_bounded_memory() {
    let Some(python) = test_python() else { return };
    let p = generated(&python, 200);
    p.write(
        "p.yaml",
        format!(
            "stores:\n  raw: {{ url: \"file://raw\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n{}",
            std::fs::read_to_string(repo().join("bench/xml-pipeline.yaml")).unwrap().split("tasks:\n").nth(1).unwrap()
        ),
    );
    let timed = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(weir_bin())
        .args(["run", "p.yaml"])
        .current_dir(p.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&timed.stderr);
    assert!(timed.status.success(), "{stderr}");
    let kb: u64 = stderr.lines().last().unwrap().trim().parse().unwrap();
    // The whole file is 200 MB; what is held is a batch of rows and the Parquet writer's buffers.
    assert!(kb < 256 * 1024, "peak RSS {kb} KB");
    let rows = read_rows(&p.join("lake/items"));
    let items: usize = std::fs::read_to_string(p.join("raw/big.xml")).unwrap().matches("<E1EDP01 ").count();
    assert_eq!(rows.len(), items);
    assert!(rows.iter().all(|r| r["doc"].len() == 16 && !r["material"].is_empty()));
}

/// A big file with no comments, CDATA or DOCTYPE is cut at its IDOC elements and read on
/// every core: the rows (headers included) are those of reading it whole, and a malformed
/// record in a later part is named by the same line and column.
#[test]
fn a_big_file_is_read_in_parts_with_the_rows_of_a_whole_read() {
    let Some(python) = test_python() else { return };
    let p = generated(&python, 3);
    let pipeline = std::fs::read_to_string(repo().join("bench/xml-pipeline.yaml")).unwrap();
    p.write("p.yaml", &pipeline);
    let run = |min: &str| {
        let _ = std::fs::remove_dir_all(p.join("lake"));
        let _ = std::fs::remove_dir_all(p.join(".weir"));
        let r = p.weir_env(&["-vv", "run", "p.yaml"], &[("WEIR_XML_SPLIT_MIN", min)]);
        let mut rows = if r.code == 0 { read_rows(&p.join("lake/items")) } else { Vec::new() };
        rows.sort();
        (r, rows)
    };
    let (parts, cut) = run("1");
    parts.ok();
    assert!(parts.stderr.contains("XML file read in parts") && parts.stderr.contains("parts=2"), "{}", parts.stderr);
    let (whole, rows) = run("1000000000000");
    whole.ok();
    assert!(!whole.stderr.contains("read in parts"));
    assert!(rows.len() > 1000, "{}", rows.len());
    assert_eq!(cut, rows, "the same rows read in parts and whole");
    // A value not of its type near the end (in the second part): the same line and column.
    let text = std::fs::read_to_string(p.join("raw/big.xml")).unwrap();
    let at = text.rfind("<MENGE").unwrap();
    let end = at + text[at..].find("</MENGE>").unwrap();
    let open = at + text[at..].find('>').unwrap() + 1;
    p.write("raw/big.xml", format!("{}not a number{}", &text[..open], &text[end..]));
    let (parts, _) = run("1");
    let (whole, _) = run("1000000000000");
    assert_eq!(parts.code, 1);
    let line = |r: &Run| {
        r.stdout.lines().chain(r.stderr.lines()).find(|l| l.contains("malformed XML record")).map(str::to_string)
    };
    assert!(line(&whole).is_some_and(|l| l.contains("not a number")), "{}", whole.stdout);
    assert_eq!(line(&parts), line(&whole));
    // A comment anywhere: read whole.
    p.write("raw/big.xml", text.replacen("<IDOC", "<!-- a note --><IDOC", 1));
    let (r, commented) = run("1");
    r.ok();
    assert!(!r.stderr.contains("read in parts"), "{}", r.stderr);
    assert_eq!(commented, rows);
}

/// A project with `raw/big.xml`: `mb` megabytes of IDoc-style XML from `bench/xmlgen.py`.
fn generated(python: &str, mb: u32) -> Project {
    let p = Project::new();
    std::fs::create_dir_all(p.join("raw")).unwrap();
    let out = std::process::Command::new(python)
        .arg(repo().join("bench/xmlgen.py"))
        .arg(p.join("raw/big.xml"))
        .args(["--mb", &mb.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p
}
