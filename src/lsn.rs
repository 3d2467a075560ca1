//! The WAL position type.
//!
//! Every LSN in pgcdc is an [`Lsn`]: parsed once at the edge (config, SQL results, wire bytes) and
//! compared as an integer everywhere else. Comparing the `X/Y` text form orders positions wrongly
//! (`0/A` sorts after `0/10`), which is exactly the bug this type exists to prevent.

use std::fmt;
use std::str::FromStr;

/// A PostgreSQL write-ahead-log position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// `0/0`: the server reads it as "wherever the slot is".
    pub const ZERO: Lsn = Lsn(0);

    pub const fn new(value: u64) -> Lsn {
        Lsn(value)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// 16 upper-case hex digits: fixed width, so the lexical order of file names is LSN order.
    pub fn to_file_hex(self) -> String {
        format!("{:016X}", self.0)
    }

    /// Parses the 16-digit form written by [`Lsn::to_file_hex`].
    pub fn from_file_hex(s: &str) -> Option<Lsn> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Lsn)
    }

    /// Bytes between two positions, zero when `other` is ahead.
    pub fn saturating_sub(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Lsn {
        Lsn(value)
    }
}

impl fmt::Display for Lsn {
    /// PostgreSQL's own `X/Y` form, as `pg_lsn` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid LSN {0:?}: expected the X/Y hexadecimal form, e.g. 16/B374D848")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Lsn, ParseLsnError> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let parse = |part: &str| {
            if part.is_empty() || part.len() > 8 {
                return Err(err());
            }
            u32::from_str_radix(part, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(parse(hi)?) << 32) | u64::from(parse(lo)?)))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let lsn = Lsn::new(0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("16/B374D848".parse::<Lsn>(), Ok(lsn));
        assert_eq!("0/0".parse::<Lsn>(), Ok(Lsn::ZERO));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "16", "/1", "1/", "G/1", "1/2/3", "123456789/0", " 1/2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn orders_numerically_not_lexically() {
        let a: Lsn = "0/A".parse().unwrap();
        let b: Lsn = "0/10".parse().unwrap();
        assert!(a < b);
    }

    #[test]
    fn file_hex_is_fixed_width_and_round_trips() {
        let lsn = Lsn::new(0x1_0000_00AB);
        assert_eq!(lsn.to_file_hex(), "00000001000000AB");
        assert_eq!(Lsn::from_file_hex("00000001000000AB"), Some(lsn));
        assert_eq!(Lsn::from_file_hex("1AB"), None);
        assert_eq!(Lsn::from_file_hex("00000001000000AG"), None);
        assert!(Lsn::new(9).to_file_hex() < Lsn::new(10).to_file_hex());
    }
}
