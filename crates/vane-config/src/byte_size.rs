//! Byte sizes written as people write them: `512`, `"64KiB"`, `"1MiB"`, `"2GiB"`, `"10kB"`.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub usize);

const UNITS: [(&str, usize); 7] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("kB", 1_000),
    ("B", 1),
];

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, multiplier) = UNITS
            .iter()
            .find_map(|(unit, m)| s.strip_suffix(unit).map(|n| (n.trim(), *m)))
            .unwrap_or((s, 1));
        let n: usize = number
            .parse()
            .map_err(|_| format!("invalid size {s:?}: use e.g. 512, \"64KiB\", \"1MiB\""))?;
        n.checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (unit, m) in &UNITS[..3] {
            if self.0 >= *m && self.0.is_multiple_of(*m) {
                return write!(f, "{}{unit}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => usize::try_from(n).map(ByteSize).map_err(de::Error::custom),
            Raw::Text(t) => t.parse().map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_units() {
        assert_eq!("1MiB".parse(), Ok(ByteSize(1 << 20)));
        assert_eq!("10 kB".parse(), Ok(ByteSize(10_000)));
        assert_eq!("512".parse(), Ok(ByteSize(512)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }
}
