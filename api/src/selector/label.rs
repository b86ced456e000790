//! Label selectors: the string syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h`)
//! and the structured `metav1.LabelSelector`, compiled to one list of
//! requirements that all must hold.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

use super::SelectorError;
use crate::validation::{label_value_errors, qualified_name_errors};

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`: present with the value.
    Equals,
    /// `key==value`: same as [`Operator::Equals`], kept for round-tripping.
    DoubleEquals,
    /// `key!=value`: absent or with another value.
    NotEquals,
    /// `key in (a,b)`: present with one of the values.
    In,
    /// `key notin (a,b)`: absent or with none of the values.
    NotIn,
    /// `key`: present.
    Exists,
    /// `!key`: absent.
    DoesNotExist,
    /// `key>n`: present with an integer greater than n.
    GreaterThan,
    /// `key<n`: present with an integer less than n.
    LessThan,
}

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: Operator,
    /// The values compared against (sorted for set operators).
    pub values: Vec<String>,
}

impl Requirement {
    /// Build and validate a requirement.
    pub fn new(key: &str, operator: Operator, mut values: Vec<String>) -> Result<Self, SelectorError> {
        let errs = qualified_name_errors(key);
        if !errs.is_empty() {
            return Err(SelectorError::InvalidKey { key: key.to_string(), reason: errs.join("; ") });
        }
        let bad_values =
            |reason: &str| SelectorError::InvalidValues { key: key.to_string(), reason: reason.to_string() };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(bad_values("for 'in', 'notin' operators, values set can't be empty"));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
                return Err(bad_values("exact-match compatibility requires one single value"));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(bad_values("values set must be empty for exists and does not exist"));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(bad_values("for 'Gt', 'Lt' operators, exactly one value is required"));
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(bad_values("for 'Gt', 'Lt' operators, the value must be an integer"));
                }
            }
            _ => {}
        }
        for value in &values {
            let errs = label_value_errors(value);
            if !errs.is_empty() {
                return Err(SelectorError::InvalidValue {
                    key: key.to_string(),
                    value: value.clone(),
                    reason: errs.join("; "),
                });
            }
        }
        if matches!(operator, Operator::In | Operator::NotIn) {
            values.sort();
            values.dedup();
        }
        Ok(Self { key: key.to_string(), operator, values })
    }

    /// Whether the label set satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        let in_values = |v: &String| self.values.iter().any(|x| x == v);
        let compare = |ord: std::cmp::Ordering| {
            let (Some(v), Some(bound)) = (got, self.values.first()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(bound)) => v.cmp(&bound) == ord,
                _ => false,
            }
        };
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => got.is_some_and(in_values),
            Operator::NotEquals | Operator::NotIn => !got.is_some_and(in_values),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan => compare(std::cmp::Ordering::Greater),
            Operator::LessThan => compare(std::cmp::Ordering::Less),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
        }
    }
}

/// A parsed label selector: all requirements must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parse the query-string syntax. An empty (or all-blank) string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let requirements = super::parse::parse(input)?;
        Ok(Self::from_requirements(requirements))
    }

    /// Equality requirements for each entry of a label map (a Service selector).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let reqs = labels
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::Equals, vec![v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_requirements(reqs))
    }

    /// Compile a structured selector (`matchLabels` + `matchExpressions`).
    ///
    /// An empty structured selector selects everything; callers holding an
    /// `Option` treat `None` as selecting nothing, as Kubernetes does.
    pub fn from_label_selector(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            reqs.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::InvalidOperator { operator: other.to_string() });
                }
            };
            reqs.push(Requirement::new(&expr.key, operator, expr.values.clone().unwrap_or_default())?);
        }
        Ok(Self::from_requirements(reqs))
    }

    /// Compile a structured selector given as JSON (as stored in objects).
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let typed: metav1::LabelSelector = serde_json::from_value(selector.clone())
            .map_err(|e| SelectorError::Syntax { input: selector.to_string(), position: 0, message: e.to_string() })?;
        Self::from_label_selector(&typed)
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        // Kubernetes sorts by key, which gives a stable canonical string form.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }

    /// Whether every requirement holds for the label set.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector matches `metadata.labels` of a JSON object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&labels_of(obj))
    }

    /// Whether the selector has no requirements (selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

/// `metadata.labels` of a JSON object as a map; non-string values are skipped.
pub(crate) fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

impl FromStr for LabelSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).expect("valid selector in test")
    }

    #[test]
    fn parses_every_operator() {
        let s = sel("a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j,k>3,l<5");
        assert_eq!(s.requirements().len(), 9);
        assert_eq!(s.to_string(), "a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j,k>3,l<5");
        let l = labels(&[("a", "b"), ("e", "y"), ("g", ""), ("i", "j"), ("k", "4"), ("l", "1")]);
        assert!(s.matches(&l));
        let mut l2 = l.clone();
        l2.insert("h".into(), "x".into());
        assert!(!s.matches(&l2));
        let mut l3 = l.clone();
        l3.insert("f".into(), "z".into());
        assert!(!s.matches(&l3));
        let mut l4 = l;
        l4.insert("k".into(), "notanumber".into());
        assert!(!s.matches(&l4));
    }

    #[test]
    fn whitespace_and_empty() {
        assert!(sel("").is_empty());
        assert!(sel("   ").is_empty());
        assert!(sel("").matches(&labels(&[])));
        let s = sel(" app = web , tier in ( fe , be ) ");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "be")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(sel("a=").matches(&labels(&[("a", "")])));
        assert!(sel("a in (x,)").matches(&labels(&[("a", "")])));
    }

    #[test]
    fn not_equals_matches_missing() {
        let s = sel("env!=prod,tier notin (db)");
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in ["a=b,", ",a", "a in x", "a in (x", "a b", "!a=b", "a=(", "=b", "a,,b", "k>x", "x in (a b)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(matches!(LabelSelector::parse("a=b c"), Err(SelectorError::Syntax { .. })));
        assert!(matches!(LabelSelector::parse("-bad=x"), Err(SelectorError::InvalidKey { .. })));
        assert!(matches!(LabelSelector::parse("a=-x"), Err(SelectorError::InvalidValue { .. })));
        let err = LabelSelector::parse("a in x").expect_err("no parenthesis");
        assert!(err.to_string().contains("expected: '('"), "{err}");
    }

    #[test]
    fn structured_selector() {
        let ls = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["fe".into(), "be".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                metav1::LabelSelectorRequirement { key: "zone".into(), operator: "Exists".into(), values: None },
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["prod".into()]),
                },
            ]),
        };
        let s = LabelSelector::from_label_selector(&ls).expect("valid");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("zone", "a"), ("canary", "1")])));
        assert!(LabelSelector::from_label_selector(&metav1::LabelSelector::default()).expect("empty").is_empty());
    }

    #[test]
    fn structured_selector_errors() {
        let bad_op = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Equals".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let err = LabelSelector::from_label_selector(&bad_op).expect_err("bad operator");
        assert_eq!(err.to_string(), "\"Equals\" is not a valid label selector operator");
        let empty_in = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: Some(vec![]),
            }]),
            ..Default::default()
        };
        assert!(matches!(LabelSelector::from_label_selector(&empty_in), Err(SelectorError::InvalidValues { .. })));
        let exists_vals =
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]});
        assert!(LabelSelector::from_json(&exists_vals).is_err());
    }

    #[test]
    fn object_and_map_helpers() {
        let obj = serde_json::json!({"metadata": {"labels": {"app": "web"}}});
        assert!(sel("app=web").matches_object(&obj));
        assert!(!sel("app=db").matches_object(&obj));
        let s = LabelSelector::from_map(&labels(&[("app", "web")])).expect("valid");
        assert!(s.matches_object(&obj));
        assert_eq!("app=web".parse::<LabelSelector>().expect("valid"), s);
    }
}
