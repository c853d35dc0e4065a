//! Pagination: the first page's URL and, from each answer, the next one's (or none).

use serde_json::Value;
use url::Url;

use super::pointer;
use crate::spec;

/// One paging style (`spec::Paginate` has exactly one key set: compile checks).
#[derive(Debug, Clone, PartialEq)]
pub enum Paging {
    Cursor(spec::CursorPaging),
    Page(spec::PagePaging),
    Offset(spec::OffsetPaging),
    NextUrl(String),
    LinkHeader,
}

impl Paging {
    /// The style `p` sets; `None` when it sets none (or `link_header: false`).
    pub fn of(p: &spec::Paginate) -> Option<Paging> {
        if let Some(c) = &p.cursor {
            Some(Paging::Cursor(c.clone()))
        } else if let Some(pg) = &p.page {
            Some(Paging::Page(pg.clone()))
        } else if let Some(o) = &p.offset {
            Some(Paging::Offset(o.clone()))
        } else if let Some(n) = &p.next_url {
            Some(Paging::NextUrl(n.clone()))
        } else if p.link_header == Some(true) {
            Some(Paging::LinkHeader)
        } else {
            None
        }
    }
}

/// What a paging style remembers between pages.
#[derive(Debug, Default)]
pub struct State {
    /// Page number or offset of the page just read.
    position: u64,
    /// Cursors given so far: one given twice would loop.
    cursors: std::collections::HashSet<String>,
}

/// The first page's URL: numbered pages and offsets name their first.
pub fn start(p: &Option<Paging>, mut url: Url) -> Url {
    match p {
        Some(Paging::Page(pg)) => {
            set(&mut url, &pg.param, &pg.first.unwrap_or(1).to_string());
            if let (Some(sp), Some(size)) = (&pg.size_param, pg.size) {
                set(&mut url, sp, &size.to_string());
            }
        }
        Some(Paging::Offset(o)) => {
            set(&mut url, &o.param, "0");
            set(&mut url, &o.limit_param, &o.limit.to_string());
        }
        _ => {}
    }
    url
}

/// The next page's URL after the answer (`headers`, `body`) to `url` that held `n` records;
/// `None` when the API is done.
pub fn next(
    p: &Option<Paging>,
    state: &mut State,
    url: &Url,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    n: usize,
) -> Result<Option<Url>, String> {
    let Some(p) = p else { return Ok(None) };
    match p {
        Paging::Cursor(c) => {
            let cursor = match body.pointer(&pointer(&c.next)) {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::String(s)) if s.is_empty() => return Ok(None),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(format!("the cursor `{}` is {}, not text or a number", c.next, super::kind_of(other)));
                }
            };
            if !state.cursors.insert(cursor.clone()) {
                return Err(format!(
                    "the API gave the cursor `{}` a second time (stopped instead of reading forever)",
                    c.next
                ));
            }
            let mut u = url.clone();
            set(&mut u, &c.param, &cursor);
            Ok(Some(u))
        }
        Paging::Page(pg) => {
            let full = pg.size.map_or(n > 0, |size| n as u64 >= size);
            if !full {
                return Ok(None);
            }
            if state.position == 0 {
                state.position = pg.first.unwrap_or(1);
            }
            state.position += 1;
            let mut u = url.clone();
            set(&mut u, &pg.param, &state.position.to_string());
            Ok(Some(u))
        }
        Paging::Offset(o) => {
            if (n as u64) < o.limit {
                return Ok(None);
            }
            state.position += o.limit;
            let mut u = url.clone();
            set(&mut u, &o.param, &state.position.to_string());
            Ok(Some(u))
        }
        Paging::NextUrl(path) => match body.pointer(&pointer(path)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => {
                url.join(s).map(Some).map_err(|e| format!("the next page's URL `{s}` is not a URL: {e}"))
            }
            Some(other) => Err(format!("`{path}` is {}, not a URL", super::kind_of(other))),
        },
        Paging::LinkHeader => {
            let links: Vec<&str> =
                headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).collect();
            match links.iter().find_map(|l| link_next(l)) {
                Some(target) => url
                    .join(&target)
                    .map(Some)
                    .map_err(|e| format!("the `Link` header's next URL `{target}` is not a URL: {e}")),
                None => Ok(None),
            }
        }
    }
}

/// Set query parameter `k` to `v`, replacing any value it had.
fn set(url: &mut Url, k: &str, v: &str) {
    let pairs: Vec<(String, String)> =
        url.query_pairs().filter(|(key, _)| key != k).map(|(a, b)| (a.into_owned(), b.into_owned())).collect();
    url.query_pairs_mut().clear().extend_pairs(pairs).append_pair(k, v);
}

/// The target of the `rel="next"` link of a `Link` header value (RFC 8288): links are
/// `<uri>` followed by `;`-separated parameters, separated by commas; `rel` may hold several
/// space-separated relation types, quoted or not.
pub fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        // The parameters run to the next link (`,` then `<`) or the end; a quoted value may
        // hold a comma.
        let mut end = after.len();
        let mut quoted = false;
        for (i, ch) in after.char_indices() {
            match ch {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &after[..end];
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else { return false };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim().trim_matches('"').split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_string());
        }
        rest = &after[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let h = r#"<https://api.github.com/repos?page=3&per_page=100>; rel="next", <https://api.github.com/repos?page=50&per_page=100>; rel="last""#;
        assert_eq!(link_next(h).unwrap(), "https://api.github.com/repos?page=3&per_page=100");
        assert_eq!(link_next(r#"<a?x=1>; rel="prev", </b?p=2>; title="a, b"; rel=next"#).unwrap(), "/b?p=2");
        assert_eq!(link_next(r#"<x>; rel="last first""#), None);
        assert_eq!(link_next(r#"<x>; rel="prefetch next""#).unwrap(), "x");
        assert_eq!(link_next(""), None);
    }

    #[test]
    fn pages_and_offsets_stop_on_a_short_page() {
        let url = Url::parse("http://h/x?a=1").unwrap();
        let page = Some(Paging::Page(spec::PagePaging {
            param: "page".into(),
            size_param: Some("per_page".into()),
            size: Some(2),
            first: None,
        }));
        let first = start(&page, url.clone());
        assert_eq!(first.as_str(), "http://h/x?a=1&page=1&per_page=2");
        let mut st = State::default();
        let h = reqwest::header::HeaderMap::new();
        let n2 = next(&page, &mut st, &first, &h, &Value::Null, 2).unwrap().unwrap();
        assert_eq!(n2.as_str(), "http://h/x?a=1&per_page=2&page=2");
        assert_eq!(next(&page, &mut st, &n2, &h, &Value::Null, 1).unwrap(), None);
        let cursor = Some(Paging::Cursor(spec::CursorPaging { param: "c".into(), next: "meta.next".into() }));
        let mut st = State::default();
        let body: Value = serde_json::json!({"meta": {"next": "abc"}});
        let u = next(&cursor, &mut st, &url, &h, &body, 5).unwrap().unwrap();
        assert_eq!(u.as_str(), "http://h/x?a=1&c=abc");
        assert!(next(&cursor, &mut st, &u, &h, &body, 5).is_err(), "a cursor given twice");
        assert_eq!(next(&cursor, &mut st, &u, &h, &serde_json::json!({"meta": {}}), 5).unwrap(), None);
    }
}
