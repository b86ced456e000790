//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`).
//!
//! Owns parsing, comparison and the canonical string form of quantities as the
//! apiserver produces them. A quantity is held exactly as a whole number of
//! nano-units (`i128`), which covers every suffix from `n` to `E`/`Ei` without
//! floating point; finer precision is rounded up, as Kubernetes does.
//! It does not know which resource (cpu, memory) a quantity belongs to: callers
//! pick [`Quantity::as_millis`] or [`Quantity::as_bytes`].

use std::cmp::Ordering;
use std::fmt;

/// Nano-units per unit.
const NANO: i128 = 1_000_000_000;

/// The pattern Kubernetes quotes when a quantity does not parse.
pub const QUANTITY_REGEX: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the quantity grammar.
    #[error("quantities must match the regular expression '{QUANTITY_REGEX}': {input:?}")]
    Syntax {
        /// The rejected text.
        input: String,
    },
    /// The value is too large to represent.
    #[error("quantity {input:?} is out of range")]
    OutOfRange {
        /// The rejected text.
        input: String,
    },
}

/// How a quantity was written; the canonical form keeps the same family of suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// `Ki`, `Mi`, … powers of 1024.
    BinarySI,
    /// `m`, `k`, `M`, … powers of 1000 (also plain numbers).
    DecimalSI,
    /// `e3`, `E-6`, … scientific notation.
    DecimalExponent,
}

/// A parsed resource quantity. Equality and ordering compare the value only.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// Parse a Kubernetes quantity string.
pub fn parse_quantity(input: &str) -> Result<Quantity, QuantityError> {
    let syntax = || QuantityError::Syntax { input: input.to_string() };
    let range = || QuantityError::OutOfRange { input: input.to_string() };
    let s = input;
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(syntax());
    }
    // Value = digits * 10^exp10 * 2^exp2.
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    let format = match suffix {
        "" => QuantityFormat::DecimalSI,
        "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
            exp10 += match suffix {
                "n" => -9,
                "u" => -6,
                "m" => -3,
                "k" => 3,
                "M" => 6,
                "G" => 9,
                "T" => 12,
                "P" => 15,
                _ => 18,
            };
            QuantityFormat::DecimalSI
        }
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            exp2 = match suffix {
                "Ki" => 10,
                "Mi" => 20,
                "Gi" => 30,
                "Ti" => 40,
                "Pi" => 50,
                _ => 60,
            };
            QuantityFormat::BinarySI
        }
        _ => {
            let exp = suffix.strip_prefix(['e', 'E']).ok_or_else(syntax)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            let e: i32 = exp.parse().map_err(|_| range())?;
            exp10 = exp10.checked_add(e).ok_or_else(range)?;
            QuantityFormat::DecimalExponent
        }
    };
    // Work in nano-units: shift the decimal exponent by 9.
    exp10 += 9;
    let mut digits: i128 = 0;
    let mut lost = false;
    // Leading zeros are harmless; cap significant digits to stay within i128.
    for (i, b) in int_part.bytes().chain(frac_part.bytes()).enumerate() {
        let d = i128::from(b - b'0');
        if digits > 10i128.pow(30) {
            // Too many digits: drop the remainder, remembering to round up.
            let remaining = (int_part.len() + frac_part.len() - i) as i32;
            exp10 += remaining;
            lost = int_part.bytes().chain(frac_part.bytes()).skip(i).any(|b| b != b'0');
            break;
        }
        digits = digits * 10 + d;
    }
    let mut value = digits;
    if exp10 >= 0 {
        let factor = 10i128.checked_pow(exp10 as u32).ok_or_else(range)?;
        value = value.checked_mul(factor).ok_or_else(range)?;
    } else {
        let divisor = 10i128.checked_pow((-exp10) as u32);
        value = match divisor {
            Some(d) => {
                let q = value / d;
                if value % d != 0 || lost { q + 1 } else { q }
            }
            None => i128::from(value != 0),
        };
        lost = false;
    }
    if lost {
        value = value.checked_add(1).ok_or_else(range)?;
    }
    value = value.checked_mul(1i128 << exp2).ok_or_else(range)?;
    // Bound to what Kubernetes can hold (±2^63 units) so conversions are safe.
    if value > i128::from(i64::MAX) * NANO {
        return Err(range());
    }
    Ok(Quantity { nanos: if negative { -value } else { value }, format })
}

impl Quantity {
    /// A quantity of whole units in decimal form.
    pub fn from_units(units: i64) -> Self {
        Self { nanos: i128::from(units) * NANO, format: QuantityFormat::DecimalSI }
    }

    /// A quantity of thousandths of a unit (for cpu).
    pub fn from_millis(millis: i64) -> Self {
        Self { nanos: i128::from(millis) * 1_000_000, format: QuantityFormat::DecimalSI }
    }

    /// The value in thousandths of a unit, rounded up (cpu millicores).
    pub fn as_millis(&self) -> i64 {
        clamp(div_ceil(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded up (memory bytes).
    pub fn as_bytes(&self) -> i64 {
        clamp(div_ceil(self.nanos, NANO))
    }

    /// The exact value in nano-units.
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The suffix family the quantity was written in.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl fmt::Display for Quantity {
    /// The canonical form: the largest suffix of the quantity's family that
    /// keeps the number whole (`1500m`, `1536Mi`, `1k`, `0`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.nanos;
        if n == 0 {
            return f.write_str("0");
        }
        let whole = n % NANO == 0;
        if self.format == QuantityFormat::BinarySI && whole && n.abs() >= 1024 * NANO {
            let mut units = n / NANO;
            let mut idx = 0;
            while idx < 6 && units % 1024 == 0 {
                units /= 1024;
                idx += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][idx];
            return write!(f, "{units}{suffix}");
        }
        // Decimal: powers of 1000 from nano (index 0) to exa (index 9).
        let mut mantissa = n;
        let mut idx = 0;
        while idx < 9 && mantissa % 1000 == 0 {
            mantissa /= 1000;
            idx += 1;
        }
        if self.format == QuantityFormat::DecimalExponent {
            let exp = (idx as i32) * 3 - 9;
            return if exp == 0 { write!(f, "{mantissa}") } else { write!(f, "{mantissa}e{exp}") };
        }
        let suffix = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"][idx];
        write!(f, "{mantissa}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        parse_quantity(s).expect("valid quantity in test")
    }

    #[test]
    fn parses_decimal_and_binary() {
        assert_eq!(q("100m").as_millis(), 100);
        assert_eq!(q("1").as_millis(), 1000);
        assert_eq!(q("0.5").as_millis(), 500);
        assert_eq!(q(".5").as_millis(), 500);
        assert_eq!(q("1.5Gi").as_bytes(), 1536 * 1024 * 1024);
        assert_eq!(q("128Mi").as_bytes(), 128 << 20);
        assert_eq!(q("1k").as_bytes(), 1000);
        assert_eq!(q("1M").as_bytes(), 1_000_000);
        assert_eq!(q("2e3").as_bytes(), 2000);
        assert_eq!(q("2E-3").as_millis(), 2);
        assert_eq!(q("1Ei").as_bytes(), 1 << 60);
        assert_eq!(q("-1").as_bytes(), -1);
        assert_eq!(q("+3").as_bytes(), 3);
    }

    #[test]
    fn rounds_up() {
        assert_eq!(q("1n").as_millis(), 1);
        assert_eq!(q("0.1").as_bytes(), 1);
        assert_eq!(q("1.0000000001").as_nanos(), NANO + 1);
        assert_eq!(q("100u").as_millis(), 1);
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in ["", "abc", "1.2.3", "1Kb", "1ki", "Mi", "1e", "1e+", "1 Gi", ".", "--1", "1mm"] {
            assert!(
                matches!(parse_quantity(bad), Err(QuantityError::Syntax { .. })),
                "{bad:?} should be a syntax error"
            );
        }
        assert!(matches!(parse_quantity("1e400"), Err(QuantityError::OutOfRange { .. })));
        assert!(matches!(parse_quantity("100000Ei"), Err(QuantityError::OutOfRange { .. })));
    }

    #[test]
    fn canonical_form() {
        for (input, want) in [
            ("1.5", "1500m"),
            ("1000", "1k"),
            ("0.1", "100m"),
            ("1500Mi", "1500Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("2048Ki", "2Mi"),
            ("1e3", "1e3"),
            ("1500e-3", "1500e-3"),
            ("0", "0"),
            ("0Gi", "0"),
            ("-100m", "-100m"),
            ("1n", "1n"),
            ("12", "12"),
        ] {
            assert_eq!(q(input).to_string(), want, "canonical form of {input}");
        }
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert_eq!(Quantity::from_millis(250), q("250m"));
        assert_eq!(Quantity::from_units(2), q("2"));
        assert!(q("-1").is_negative());
        assert_eq!(q("1Gi").format(), QuantityFormat::BinarySI);
    }
}
