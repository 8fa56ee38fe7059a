//! Human units in the config file: sizes (`"10MiB"`) and durations (`"30s"`).
//!
//! Both are parsed once while the config is validated; the rest of the crate only sees
//! [`ByteSize`] and [`std::time::Duration`].

use std::fmt;
use std::time::Duration;

/// A number of bytes, written in the config as `"10MiB"`, `"1GiB"`, `"512KB"` or a bare `"1000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size with an optional IEC (`KiB`, `MiB`, `GiB`) or SI (`KB`, `MB`, `GB`) unit.
    ///
    /// # Errors
    /// A message naming what was expected, for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| ByteSize(size.as_u64()))
            .map_err(|_| {
                format!("`{text}` is not a size (examples: \"10MiB\", \"1GiB\", \"4096\")")
            })
    }

    /// The size in bytes.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

/// Parses a duration such as `"30s"`, `"5m"`, `"250ms"` or `"1h 30m"`.
///
/// # Errors
/// A message naming what was expected, for the config problem list.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("`{text}` is not a duration (examples: \"30s\", \"5m\", \"250ms\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_iec_si_and_bare_numbers() {
        assert_eq!(ByteSize::parse("10MiB"), Ok(ByteSize(10 * 1024 * 1024)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("1KB"), Ok(ByteSize(1000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("ten megs").is_err());
        assert!(ByteSize::parse("-1").is_err());
    }

    #[test]
    fn durations_accept_humantime() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_display_in_iec_units() {
        assert_eq!(ByteSize(10 * 1024 * 1024).to_string(), "10.0 MiB");
    }
}
