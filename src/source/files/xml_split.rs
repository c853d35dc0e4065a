//! One big XML file read on several cores: cut where it is safe, each part parsed with the
//! start tags of the elements that enclose it before it and their end tags after it.
//!
//! Safe means: every `<` of the file starts a tag. A scan ([`cuts`]) reads the file up to the
//! last cut, refuses any `<!` (comments, CDATA sections and a DOCTYPE, whose entities would
//! not reach the later parts) and any `<?` but an XML declaration with no encoding or UTF-8,
//! and follows the start and end tags (a `>` inside a quoted attribute value is passed over;
//! a `<` cannot be in one, nor in text). A cut is the start of an element at the split depth
//! (the record itself, or the element that holds every header an absolute field reads: the
//! header values of a part are then inside it) whose name is the record path's step there,
//! at or after each part's share of the bytes. Anything else, and the file is read whole by
//! one core.

use bytes::{Bytes, BytesMut};
use object_store::{GetOptions, ObjectMeta, ObjectStore};

/// Where a file is cut.
#[derive(Debug, Clone)]
pub(super) struct Cut {
    /// Offset of the `<` of the element the next part starts with.
    pub at: u64,
    /// The start tags of the elements open at `at`, outermost first (line breaks as spaces:
    /// the next part's line numbers are the file's).
    pub prefix: Bytes,
    /// Their end tags, innermost first.
    pub suffix: Bytes,
    /// Line breaks before `at`, and the offset after the last one.
    pub lines: u64,
    pub line_start: u64,
}

/// The scan's cost per byte relative to a part's parse (measured on the XML benchmark's file:
/// the scan of its first half took 1.3 s beside part 0's parse, a half's parse 3.4 s).
const SCAN_COST: f64 = 1.0 / 3.0;

/// Where parts 1, 2, … start (at the first element to cut at from there). Part 0 parses
/// while the file is scanned and the others wait for the scan, so its share is bigger, for
/// all to end together: with `r` the scan's relative cost, each later part gets
/// `(1 − r)/(n − r)` of the file (two parts: 60 % and 40 %).
pub(super) fn shares(size: u64, parts: usize) -> Vec<u64> {
    let n = parts as f64;
    let later = (1.0 - SCAN_COST) / (n - SCAN_COST);
    let first = 1.0 - (n - 1.0) * later;
    (1..parts).map(|i| (size as f64 * (first + (i - 1) as f64 * later)).round() as u64).collect()
}

/// The bytes read at a time by the scan.
const SCAN_CHUNK: u64 = 8 << 20;

/// The cuts of `file` into `parts` parts (`parts - 1` of them), or none when it is not safe
/// or no element to cut at comes after a share's start. `depth` is the split depth and
/// `local` the name of the elements at it (any namespace).
pub(super) async fn cuts(
    store: &dyn ObjectStore,
    file: &ObjectMeta,
    parts: usize,
    depth: usize,
    local: &[u8],
) -> object_store::Result<Vec<Cut>> {
    let shares = shares(file.size, parts);
    let mut lx = Lexer { depth, local: local.to_vec(), stack: Vec::new(), lines: 0, line_start: 0, counted: 0 };
    let mut out = Vec::new();
    // Bytes not yet lexed (a tag cut by the end of a chunk), and the offset of their first.
    let mut carry = BytesMut::new();
    let mut base = 0u64;
    let mut at = 0u64;
    while at < file.size {
        let end = (at + SCAN_CHUNK).min(file.size);
        let opts = GetOptions { range: Some(object_store::GetRange::Bounded(at..end)), ..Default::default() };
        let chunk = store.get_opts(&file.location, opts).await?.bytes().await?;
        at = end;
        carry.extend_from_slice(&chunk);
        let last = at == file.size;
        match lx.lex(&carry, base, &shares[out.len()..], last, &mut out) {
            Lexed::Unsafe => return Ok(Vec::new()),
            Lexed::Done => return Ok(out),
            Lexed::Upto(n) => {
                let _ = carry.split_to(n);
                base += n as u64;
            }
        }
        if out.len() == shares.len() {
            return Ok(out);
        }
    }
    Ok(Vec::new())
}

enum Lexed {
    /// Something that makes cutting unsafe.
    Unsafe,
    /// Every cut is found.
    Done,
    /// Lexed up to this many bytes (the rest is an unfinished tag).
    Upto(usize),
}

struct Lexer {
    depth: usize,
    local: Vec<u8>,
    /// Open elements: the start tag of those above the split depth (the rest: `None`).
    stack: Vec<Option<Vec<u8>>>,
    lines: u64,
    line_start: u64,
    /// Line breaks are counted up to this offset.
    counted: u64,
}

impl Lexer {
    fn count_lines(&mut self, buf: &[u8], base: u64, upto: u64) {
        if upto <= self.counted {
            return;
        }
        let from = (self.counted - base) as usize;
        let to = (upto - base) as usize;
        for i in memchr::memchr_iter(b'\n', &buf[from..to]) {
            self.lines += 1;
            self.line_start = base + (from + i + 1) as u64;
        }
        self.counted = upto;
    }

    /// Lex `buf` (the file's bytes from `base`), cutting at the first element at the split
    /// depth at or after `shares[0]`, then `shares[1]`, ….
    fn lex(&mut self, buf: &[u8], base: u64, shares: &[u64], last: bool, out: &mut Vec<Cut>) -> Lexed {
        let mut i = 0usize;
        let mut want = shares.iter().copied();
        let mut next_share = want.next();
        while let Some(lt) = memchr::memchr(b'<', &buf[i..]).map(|p| i + p) {
            let Some(&kind) = buf.get(lt + 1) else {
                return if last { Lexed::Unsafe } else { self.upto(buf, base, lt) };
            };
            match kind {
                b'!' => return Lexed::Unsafe,
                b'?' => {
                    let Some(end) = memchr::memmem::find(&buf[lt..], b"?>").map(|p| lt + p + 2) else {
                        return if last { Lexed::Unsafe } else { self.upto(buf, base, lt) };
                    };
                    let decl = &buf[lt..end];
                    let utf8 = match memchr::memmem::find(decl, b"encoding") {
                        None => true,
                        Some(e) => {
                            let rest = String::from_utf8_lossy(&decl[e..]).to_ascii_lowercase();
                            rest.contains("utf-8") || rest.contains("utf8")
                        }
                    };
                    if base + lt as u64 != 0 || !decl.starts_with(b"<?xml") || !utf8 {
                        return Lexed::Unsafe;
                    }
                    i = end;
                }
                b'/' => {
                    let Some(end) = memchr::memchr(b'>', &buf[lt..]).map(|p| lt + p + 1) else {
                        return if last { Lexed::Unsafe } else { self.upto(buf, base, lt) };
                    };
                    if self.stack.pop().is_none() {
                        return Lexed::Unsafe;
                    }
                    i = end;
                }
                _ => {
                    // The tag's end: the first `>` outside quotes.
                    let mut j = lt + 1;
                    let end = loop {
                        match memchr::memchr3(b'>', b'"', b'\'', &buf[j..]).map(|p| j + p) {
                            None => break None,
                            Some(p) if buf[p] == b'>' => break Some(p + 1),
                            Some(p) => match memchr::memchr(buf[p], &buf[p + 1..]) {
                                Some(q) => j = p + 1 + q + 1,
                                None => break None,
                            },
                        }
                    };
                    let Some(end) = end else {
                        return if last { Lexed::Unsafe } else { self.upto(buf, base, lt) };
                    };
                    let tag = &buf[lt..end];
                    let offset = base + lt as u64;
                    // The name only matters at the split depth (most tags are deeper).
                    let local = || {
                        let name_end = tag[1..]
                            .iter()
                            .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))
                            .map_or(tag.len(), |p| p + 1);
                        let name = &tag[1..name_end];
                        name.rsplit(|&b| b == b':').next().unwrap_or(name)
                    };
                    if self.stack.len() == self.depth
                        && next_share.is_some_and(|s| offset >= s)
                        && local() == self.local.as_slice()
                    {
                        if self.stack.iter().any(Option::is_none) {
                            return Lexed::Unsafe;
                        }
                        self.count_lines(buf, base, offset);
                        let mut prefix = Vec::new();
                        let mut suffix = Vec::new();
                        for open in self.stack.iter().flatten() {
                            prefix.extend(open.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
                        }
                        for open in self.stack.iter().rev().flatten() {
                            let n = open[1..]
                                .iter()
                                .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))
                                .map_or(open.len(), |p| p + 1);
                            suffix.extend_from_slice(b"</");
                            suffix.extend_from_slice(&open[1..n]);
                            suffix.push(b'>');
                        }
                        out.push(Cut {
                            at: offset,
                            prefix: prefix.into(),
                            suffix: suffix.into(),
                            lines: self.lines,
                            line_start: self.line_start,
                        });
                        next_share = want.next();
                        if next_share.is_none() {
                            return Lexed::Done;
                        }
                    }
                    if tag[tag.len() - 2] != b'/' {
                        let keep = self.stack.len() < self.depth;
                        self.stack.push(keep.then(|| tag.to_vec()));
                    }
                    i = end;
                }
            }
        }
        self.upto(buf, base, buf.len())
    }

    fn upto(&mut self, buf: &[u8], base: u64, n: usize) -> Lexed {
        self.count_lines(buf, base, base + n as u64);
        Lexed::Upto(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn cut(doc: &str, parts: usize, depth: usize, local: &str) -> Vec<(u64, String, String, u64)> {
        let store = object_store::memory::InMemory::new();
        let path = object_store::path::Path::from("a.xml");
        futures::executor::block_on(async {
            store.put(&path, Bytes::from(doc.to_string()).into()).await.unwrap();
            let meta = store.head(&path).await.unwrap();
            cuts(&store, &meta, parts, depth, local.as_bytes())
                .await
                .unwrap()
                .into_iter()
                .map(|c| {
                    (
                        c.at,
                        String::from_utf8(c.prefix.to_vec()).unwrap(),
                        String::from_utf8(c.suffix.to_vec()).unwrap(),
                        c.lines,
                    )
                })
                .collect()
        })
    }

    #[test]
    fn cuts_at_the_split_element_after_each_share() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<R a=\"x>y\">\n<D><I><N>1</N></I><I/></D>\n<D q='>'><I><N>2</N></I></D>\n<D><I>3</I></D>\n</R>\n";
        let got = cut(doc, 2, 1, "D");
        let at = doc.find("<D q=").unwrap() as u64;
        assert_eq!(got, vec![(at, "<R a=\"x>y\">".to_string(), "</R>".to_string(), 3)]);
        // Part 0 gets more (it parses while the others wait for the scan).
        assert_eq!(shares(1000, 2), vec![600]);
        assert_eq!(shares(1000, 3), vec![500, 750]);
        // Three parts: the second cut is the next D at or after three quarters.
        let got = cut(doc, 3, 1, "D");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, doc.rfind("<D>").unwrap() as u64);
    }

    #[test]
    fn refuses_what_is_not_safe() {
        assert!(cut("<R><!-- <D> --><D/><D/><D/></R>", 2, 1, "D").is_empty(), "a comment");
        assert!(cut("<R><D><![CDATA[<D>]]></D><D/><D/></R>", 2, 1, "D").is_empty(), "CDATA");
        assert!(cut("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><R><D/><D/><D/></R>", 2, 1, "D").is_empty());
        assert!(cut("<R><D/><?pi x?><D/><D/></R>", 2, 1, "D").is_empty(), "a processing instruction");
        // A D deeper than the split depth is not a cut.
        assert!(cut("<R><D/><X><D/><D/><D/><D/></X></R>", 2, 1, "D").is_empty());
    }
}
