//! Values that must never leave the process: everything read through `${env:...}`.
//! Every text that goes to logs, errors, the state store or the terminal passes through
//! [`Secrets::redact`].

use std::sync::{Arc, RwLock};

/// Secrets shorter than this are not redacted: they would garble every message and are not
/// secret in any useful sense (a flag, a region code).
pub const MIN_SECRET_LEN: usize = 4;

pub const REDACTED: &str = "***";

/// Every secret this process has read, whatever pipeline it belongs to: the last line of
/// defence for what the CLI prints and logs.
pub fn global() -> &'static Secrets {
    static GLOBAL: std::sync::LazyLock<Secrets> = std::sync::LazyLock::new(Secrets::new);
    &GLOBAL
}

/// A shared, growing set of secret values.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Arc<RwLock<Vec<String>>>,
}

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, value: &str) {
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        if !values.iter().any(|v| v == value) {
            values.push(value.to_string());
            // Longest first, so that a secret containing another is replaced whole.
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn merge(&self, other: &Secrets) {
        if Arc::ptr_eq(&self.values, &other.values) {
            return;
        }
        let theirs = other.values.read().unwrap_or_else(|e| e.into_inner()).clone();
        for v in theirs {
            self.add(&v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// `text` with every secret value (and its URL-encoded form) replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
            let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            if encoded != *v && out.contains(encoded.as_str()) {
                out = out.replace(encoded.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_plain_and_encoded() {
        let s = Secrets::new();
        s.add("s3cr3t/pa ss");
        s.add("ab"); // too short to be redacted
        let text = "key=s3cr3t/pa ss url=s3cr3t%2Fpa+ss ab";
        assert_eq!(s.redact(text), "key=*** url=*** ab");
    }

    #[test]
    fn longest_first() {
        let s = Secrets::new();
        s.add("abcd");
        s.add("abcdefgh");
        assert_eq!(s.redact("x abcdefgh y abcd"), "x *** y ***");
    }
}
