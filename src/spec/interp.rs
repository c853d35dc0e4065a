//! `${...}` substitution in string values.
//!
//! - `${name}`: a variable from `vars`, `--var`, or a built-in (`run_id`, `run_date`)
//! - `${env:NAME}` / `${env:NAME:-default}`: the environment; the value is a secret
//! - `$${` is a literal `${`
//!
//! Substitution records which parts of the output came from where, so that an error found
//! later in the substituted text (an SQL error, say) can be pointed at in the file.

use indexmap::IndexMap;

/// A variable's value and whether it carries a secret.
#[derive(Debug, Clone)]
pub struct VarValue {
    pub value: String,
    pub secret: bool,
}

/// Where a replaced part of the output came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OffsetMap {
    /// (output start, output len, source start, source len), in byte offsets, ascending.
    replaced: Vec<(usize, usize, usize, usize)>,
}

impl OffsetMap {
    /// The source offset of an output offset. Inside a substituted value, the start of the
    /// `${...}` placeholder.
    pub fn to_source(&self, out: usize) -> usize {
        let mut delta: isize = 0;
        for &(os, ol, ss, sl) in &self.replaced {
            if out < os {
                break;
            }
            if out < os + ol {
                return ss;
            }
            delta = (ss + sl) as isize - (os + ol) as isize;
        }
        (out as isize + delta).max(0) as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Interpolated {
    pub text: String,
    /// The text contains a value read from the environment (directly or through a var).
    pub secret: bool,
    /// The environment values used, to be registered as secrets.
    pub env_values: Vec<String>,
    pub map: OffsetMap,
}

/// A problem with one placeholder; offsets are within the input string.
#[derive(Debug, Clone, PartialEq)]
pub struct InterpError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub help: Option<String>,
}

pub struct Interpolator<'a> {
    pub vars: &'a IndexMap<String, VarValue>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Interpolator<'_> {
    pub fn interpolate(&self, input: &str) -> Result<Interpolated, Vec<InterpError>> {
        let mut out = Interpolated {
            text: String::with_capacity(input.len()),
            secret: false,
            env_values: Vec::new(),
            map: OffsetMap::default(),
        };
        if !input.contains('$') {
            out.text.push_str(input);
            return Ok(out);
        }
        let mut errors = Vec::new();
        let bytes = input.as_bytes();
        let mut i = 0;
        let mut literal_start = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && input[i..].starts_with("$${") {
                out.text.push_str(&input[literal_start..i]);
                let os = out.text.len();
                out.text.push_str("${");
                out.map.replaced.push((os, 2, i, 3));
                i += 3;
                literal_start = i;
                continue;
            }
            if bytes[i] == b'$' && input[i..].starts_with("${") {
                out.text.push_str(&input[literal_start..i]);
                let Some(close) = input[i..].find('}') else {
                    errors.push(InterpError {
                        offset: i,
                        len: input.len() - i,
                        message: "unterminated `${`: missing `}`".into(),
                        help: Some("write `$${` for a literal `${`".into()),
                    });
                    literal_start = input.len();
                    break;
                };
                let inner = &input[i + 2..i + close];
                let placeholder_len = close + 1;
                match self.resolve(inner) {
                    Ok((value, secret, env_value)) => {
                        let os = out.text.len();
                        out.text.push_str(&value);
                        out.map.replaced.push((os, value.len(), i, placeholder_len));
                        out.secret |= secret;
                        if let Some(v) = env_value {
                            out.env_values.push(v);
                        }
                    }
                    Err((message, help)) => errors.push(InterpError { offset: i, len: placeholder_len, message, help }),
                }
                i += placeholder_len;
                literal_start = i;
                continue;
            }
            i += 1;
        }
        out.text.push_str(&input[literal_start.min(input.len())..]);
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }

    /// (offset, len) of every placeholder in `input` whose value is a secret: `${env:...}`,
    /// or a variable holding one. Found whether or not the others resolve.
    pub fn secret_placeholders(&self, input: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(at) = input[i..].find("${") {
            let start = i + at;
            if start > 0 && input.as_bytes()[start - 1] == b'$' {
                i = start + 2;
                continue;
            }
            let Some(close) = input[start..].find('}') else { break };
            let inner = input[start + 2..start + close].trim();
            if inner.starts_with("env:") || self.vars.get(inner).is_some_and(|v| v.secret) {
                out.push((start, close + 1));
            }
            i = start + close + 1;
        }
        out
    }

    /// (value, is secret, the environment value read).
    fn resolve(&self, inner: &str) -> Result<(String, bool, Option<String>), (String, Option<String>)> {
        let inner = inner.trim();
        if let Some(rest) = inner.strip_prefix("env:") {
            let (name, default) = match rest.split_once(":-") {
                Some((n, d)) => (n.trim(), Some(d)),
                None => (rest.trim(), None),
            };
            if name.is_empty() {
                return Err(("`${env:}` needs a variable name".into(), Some("write `${env:NAME}`".into())));
            }
            return match ((self.env)(name), default) {
                (Some(v), _) => Ok((v.clone(), true, Some(v))),
                (None, Some(d)) => Ok((d.to_string(), true, Some(d.to_string()))),
                (None, None) => Err((
                    format!("environment variable `{name}` is not set"),
                    Some(format!("set it, or give a default: `${{env:{name}:-value}}`")),
                )),
            };
        }
        if inner.is_empty() {
            return Err((
                "empty `${}`".into(),
                Some("write `${name}` for a variable, `$${` for a literal `${`".into()),
            ));
        }
        match self.vars.get(inner) {
            Some(v) => Ok((v.value.clone(), v.secret, None)),
            None => {
                let mut help = crate::diag::did_you_mean(inner, self.vars.keys().map(String::as_str));
                if help.is_none() {
                    let known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                    help = Some(format!(
                        "define it under `vars:` or pass `--var {inner}=...`; known: {}",
                        known.join(", ")
                    ));
                }
                Err((format!("unknown variable `{inner}`"), help))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> IndexMap<String, VarValue> {
        let mut v = IndexMap::new();
        v.insert("region".into(), VarValue { value: "north".into(), secret: false });
        v.insert("run_date".into(), VarValue { value: "2026-01-02".into(), secret: false });
        v.insert("token".into(), VarValue { value: "tok-123".into(), secret: true });
        v
    }

    fn env(name: &str) -> Option<String> {
        (name == "HOME_DIR").then(|| "/home/x".to_string())
    }

    #[test]
    fn substitutes_and_maps_offsets() {
        let v = vars();
        let i = Interpolator { vars: &v, env: &env };
        let r = i.interpolate("WHERE r = '${region}' AND x = 1").unwrap();
        assert_eq!(r.text, "WHERE r = 'north' AND x = 1");
        assert!(!r.secret);
        // "AND" is at output offset 18; in the source it is at 21 (placeholder is 3 longer)
        assert_eq!(&r.text[18..21], "AND");
        assert_eq!(r.map.to_source(18), 22);
        // inside the substituted value maps to the placeholder start
        assert_eq!(r.map.to_source(12), 11);
        assert_eq!(r.map.to_source(3), 3);
    }

    #[test]
    fn env_and_defaults_are_secret() {
        let v = vars();
        let i = Interpolator { vars: &v, env: &env };
        let r = i.interpolate("${env:HOME_DIR}/${env:NOPE:-dflt}").unwrap();
        assert_eq!(r.text, "/home/x/dflt");
        assert!(r.secret);
        assert_eq!(r.env_values, vec!["/home/x".to_string(), "dflt".to_string()]);
        assert!(i.interpolate("${token}").unwrap().secret);
    }

    #[test]
    fn escapes_and_errors() {
        let v = vars();
        let i = Interpolator { vars: &v, env: &env };
        assert_eq!(i.interpolate("cost $5 and $${x}").unwrap().text, "cost $5 and ${x}");
        let errs = i.interpolate("a ${regoin} b ${env:NOPE} ${oops").unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].message, "unknown variable `regoin`");
        assert_eq!(errs[0].help.as_deref(), Some("did you mean `region`?"));
        assert_eq!((errs[0].offset, errs[0].len), (2, 9));
        assert_eq!(errs[1].message, "environment variable `NOPE` is not set");
        assert!(errs[2].message.contains("unterminated"));
    }
}
