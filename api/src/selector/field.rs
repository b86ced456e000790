//! Field selectors (`spec.nodeName=n1,status.phase!=Failed`): exact-match
//! terms over the field labels a kind supports (see [`crate::fields`]).

use std::fmt;
use std::str::FromStr;

use super::SelectorError;

/// How a field selector term compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field label, e.g. `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The (unescaped) value.
    pub value: String,
}

/// A parsed field selector: all terms must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parse the query-string syntax; `\,`, `\=` and `\\` escape in values.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(input, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let fail = || SelectorError::FieldTerm { input: input.to_string(), term: term.to_string() };
            let (field, operator, raw) = split_term(term).ok_or_else(fail)?;
            let field = field.trim();
            if field.is_empty() {
                return Err(fail());
            }
            let value = unescape(raw).ok_or_else(fail)?;
            requirements.push(FieldRequirement { field: field.to_string(), operator, value });
        }
        Ok(Self { requirements })
    }

    /// Whether every term holds; `field_value` returns a field's value, and a
    /// missing value compares as the empty string.
    pub fn matches<F>(&self, mut field_value: F) -> bool
    where
        F: FnMut(&str) -> Option<String>,
    {
        self.requirements.iter().all(|r| {
            let got = field_value(&r.field).unwrap_or_default();
            match r.operator {
                FieldOperator::Equals => got == r.value,
                FieldOperator::NotEquals => got != r.value,
            }
        })
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms in the order written.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The value `field` must equal, when the selector pins it with `=`
    /// (lets callers use an index, e.g. pods by `spec.nodeName`).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

/// Split on `sep` where not preceded by an escaping backslash.
fn split_unescaped(input: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&input[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&input[start..]);
    parts
}

/// Find the first unescaped operator (`!=`, `==`, `=`) in a term.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        let rest = &term[i..];
        if c == '\\' {
            escaped = true;
        } else if rest.starts_with("!=") {
            return Some((&term[..i], FieldOperator::NotEquals, &term[i + 2..]));
        } else if rest.starts_with("==") {
            return Some((&term[..i], FieldOperator::Equals, &term[i + 2..]));
        } else if c == '=' {
            return Some((&term[..i], FieldOperator::Equals, &term[i + 1..]));
        }
    }
    None
}

/// Undo `\\`, `\,` and `\=`; any other escape (or a trailing `\`) is invalid.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=")
}

impl FromStr for FieldSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape(&r.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> FieldSelector {
        FieldSelector::parse(s).expect("valid field selector in test")
    }

    #[test]
    fn parses_terms() {
        let s = sel("a=b,c!=d,e==f");
        assert_eq!(s.requirements().len(), 3);
        assert_eq!(s.requirements()[1].operator, FieldOperator::NotEquals);
        assert_eq!(s.requirements()[2].value, "f");
        assert_eq!(s.to_string(), "a=b,c!=d,e=f");
        assert_eq!(s.exact_match("a"), Some("b"));
        assert_eq!(s.exact_match("c"), None);
    }

    #[test]
    fn empty_and_missing_values() {
        assert!(sel("").is_empty());
        assert!(sel("").matches(|_| None));
        let s = sel("spec.nodeName=");
        assert!(s.matches(|_| None));
        assert!(!s.matches(|_| Some("n1".into())));
        assert!(sel("a!=x").matches(|_| None));
    }

    #[test]
    fn matches_fields() {
        let s = sel("metadata.name=web,status.phase!=Failed");
        let lookup = |phase: &'static str| {
            move |f: &str| match f {
                "metadata.name" => Some("web".to_string()),
                "status.phase" => Some(phase.to_string()),
                _ => None,
            }
        };
        assert!(s.matches(lookup("Running")));
        assert!(!s.matches(lookup("Failed")));
    }

    #[test]
    fn escapes() {
        let s = sel(r"a=x\,y\=z\\w,b=c");
        assert_eq!(s.requirements()[0].value, r"x,y=z\w");
        assert_eq!(s.requirements().len(), 2);
        assert_eq!(s.to_string(), r"a=x\,y\=z\\w,b=c");
        assert!(FieldSelector::parse(r"a=\q").is_err());
    }

    #[test]
    fn rejects_terms_without_operator() {
        let err = FieldSelector::parse("metadata.name").expect_err("no operator");
        assert_eq!(err.to_string(), "invalid selector: 'metadata.name'; can't understand 'metadata.name'");
        assert!(FieldSelector::parse("=x").is_err());
    }
}
