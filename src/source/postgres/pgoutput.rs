//! The messages of PostgreSQL's built-in logical decoding plugin, `pgoutput` (protocol
//! version 1, as documented in "Logical Replication Message Formats"), as the SQL function
//! `pg_logical_slot_peek_binary_changes` returns them: one message per row.
//!
//! Only what change data capture needs is decoded: transaction boundaries (`Begin`, `Commit`),
//! the shape of a table (`Relation`), row changes (`Insert`, `Update`, `Delete`) and
//! `Truncate`; origin, type and logical messages are recognised and passed over. Column
//! values stay as the server sent them (binary format when the slot is read with
//! `binary 'true'`) and are decoded into Arrow by the same code as a snapshot's COPY.
//!
//! No crate on the one `tokio-postgres` in the tree parses these messages (the replication
//! additions live in a fork of rust-postgres), so they are read here, with bounds checked on
//! every field: a malformed message is an error, never a panic.

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// A transaction starts: `final_lsn` is the LSN of its commit record.
    Begin {
        final_lsn: u64,
        xid: u32,
    },
    /// A transaction ends; `end_lsn` is the end of its commit record.
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
    },
    /// The shape of a table, sent before its first change in a session and after it changes.
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple<'a>,
    },
    /// `old`: the old row's key columns (`K`) or whole old row (`O`, with `REPLICA IDENTITY FULL`).
    Update {
        relation: u32,
        old: Option<Tuple<'a>>,
        new: Tuple<'a>,
    },
    Delete {
        relation: u32,
        old: Tuple<'a>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, type and logical-decoding messages: nothing to do.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
}

/// One column's value in a tuple.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    /// A TOASTed value that did not change (not sent).
    Unchanged,
    /// Text format.
    Text(&'a [u8]),
    /// Binary format (the type's `send` function, as in binary COPY).
    Binary(&'a [u8]),
}

pub type Tuple<'a> = Vec<Value<'a>>;

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| {
            format!("a pgoutput message ends early (needs {n} bytes at offset {} of {})", self.at, self.buf.len())
        })?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| "u16")?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "u32")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "u64")?))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let rest = &self.buf[self.at..];
        let len = rest.iter().position(|b| *b == 0).ok_or("a pgoutput string has no terminator")?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Tuple<'a>, String> {
        let n = self.u16()? as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    Value::Text(self.take(len)?)
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    Value::Binary(self.take(len)?)
                }
                other => return Err(format!("unknown tuple value kind `{}`", other as char)),
            });
        }
        Ok(out)
    }
}

/// Decode one message.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, String> {
    let mut r = Reader { buf, at: 0 };
    let tag = r.u8()?;
    Ok(match tag {
        b'B' => {
            let final_lsn = r.u64()?;
            let _commit_ts = r.u64()?;
            let xid = r.u32()?;
            Message::Begin { final_lsn, xid }
        }
        b'C' => {
            let _flags = r.u8()?;
            let commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            Message::Commit { commit_lsn, end_lsn }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _replica_identity = r.u8()?;
            let n = r.u16()? as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let _flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let _typmod = r.u32()?;
                columns.push(RelationColumn { name, type_oid });
            }
            Message::Relation(Relation { id, namespace, name, columns })
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert { relation, new: r.tuple()? },
                other => return Err(format!("an insert without a new row (`{}`)", other as char)),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, new) = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    match r.u8()? {
                        b'N' => (Some(old), r.tuple()?),
                        other => return Err(format!("an update without a new row (`{}`)", other as char)),
                    }
                }
                b'N' => (None, r.tuple()?),
                other => return Err(format!("an update with an unknown part `{}`", other as char)),
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                other => return Err(format!("a delete without its old row (`{}`)", other as char)),
            }
        }
        b'T' => {
            let n = r.u32()? as usize;
            let _options = r.u8()?;
            let relations = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            Message::Truncate { relations }
        }
        b'O' | b'Y' | b'M' => Message::Other(tag),
        other => return Err(format!("unknown pgoutput message `{}`", other as char)),
    })
}

/// An LSN as PostgreSQL writes it (`16/B374D848`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// An LSN from PostgreSQL's text form.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()? as u64;
    let lo = u32::from_str_radix(lo, 16).ok()? as u64;
    Some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode() {
        let mut b = vec![b'B'];
        b.extend(0x10u64.to_be_bytes());
        b.extend(0u64.to_be_bytes());
        b.extend(7u32.to_be_bytes());
        assert_eq!(parse(&b), Ok(Message::Begin { final_lsn: 0x10, xid: 7 }));

        let mut r = vec![b'R'];
        r.extend(16384u32.to_be_bytes());
        r.extend(b"public\0orders\0");
        r.push(b'd');
        r.extend(2u16.to_be_bytes());
        for (name, oid) in [("id", 23u32), ("note", 25)] {
            r.push(1);
            r.extend(name.as_bytes());
            r.push(0);
            r.extend(oid.to_be_bytes());
            r.extend((-1i32).to_be_bytes());
        }
        let Ok(Message::Relation(rel)) = parse(&r) else { panic!("{:?}", parse(&r)) };
        assert_eq!((rel.id, rel.name.as_str(), rel.columns.len()), (16384, "orders", 2));
        assert_eq!(rel.columns[1], RelationColumn { name: "note".into(), type_oid: 25 });

        let mut u = vec![b'U'];
        u.extend(16384u32.to_be_bytes());
        u.push(b'O');
        u.extend(2u16.to_be_bytes());
        u.push(b'b');
        u.extend(4u32.to_be_bytes());
        u.extend(1i32.to_be_bytes());
        u.push(b't');
        u.extend(2u32.to_be_bytes());
        u.extend(b"hi");
        u.push(b'N');
        u.extend(2u16.to_be_bytes());
        u.push(b'n');
        u.push(b'u');
        assert_eq!(
            parse(&u),
            Ok(Message::Update {
                relation: 16384,
                old: Some(vec![Value::Binary(&1i32.to_be_bytes()), Value::Text(b"hi")]),
                new: vec![Value::Null, Value::Unchanged],
            })
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(parse(b"").is_err());
        assert!(parse(b"B\0\0").is_err());
        assert!(parse(b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xff").is_err());
        assert!(parse(b"R\0\0\0\x01public").is_err());
        assert!(parse(b"Z").is_err());
    }

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("nope"), None);
    }
}
