//! The label selector string grammar: a small lexer and recursive-descent
//! parser producing validated [`Requirement`]s.
//!
//! ```text
//! selector    := requirement ("," requirement)*
//! requirement := "!" KEY | KEY [ ("in"|"notin") "(" values ")" | ("="|"=="|"!="|">"|"<") VALUE ]
//! ```

use super::SelectorError;
use super::label::{Operator, Requirement};

/// Parse a selector string into requirements (empty input gives none).
pub(crate) fn parse(input: &str) -> Result<Vec<Requirement>, SelectorError> {
    Parser::new(input).parse()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    In,
    NotIn,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("'{s}'"),
            Token::In => "'in'".into(),
            Token::NotIn => "'notin'".into(),
            Token::Bang => "'!'".into(),
            Token::Eq => "'='".into(),
            Token::DoubleEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Gt => "'>'".into(),
            Token::Lt => "'<'".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Comma => "','".into(),
            Token::End => "end of string".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Tokens with their byte offsets, ending with [`Token::End`].
fn lex(input: &str) -> Vec<(usize, Token)> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next_eq = chars.peek().is_some_and(|&(_, n)| n == '=');
            let tok = match (c, next_eq) {
                ('=', true) => Token::DoubleEq,
                ('!', true) => Token::NotEq,
                ('=', false) => Token::Eq,
                ('!', false) => Token::Bang,
                ('(', _) => Token::Open,
                (')', _) => Token::Close,
                (',', _) => Token::Comma,
                ('>', _) => Token::Gt,
                _ => Token::Lt,
            };
            if matches!(tok, Token::DoubleEq | Token::NotEq) {
                chars.next();
            }
            out.push((pos, tok));
            continue;
        }
        let mut ident = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                break;
            }
            ident.push(c);
            chars.next();
        }
        let tok = match ident.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(ident),
        };
        out.push((pos, tok));
    }
    out.push((input.len(), Token::End));
    out
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self { input, tokens: lex(input), pos: 0 }
    }

    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).map(|(_, t)| t).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, message: String) -> SelectorError {
        let at = self.pos.saturating_sub(1);
        let position = self.tokens.get(at).map(|(p, _)| *p).unwrap_or(self.input.len());
        SelectorError::Syntax { input: self.input.to_string(), position, message }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        if *self.peek() == Token::End {
            return Ok(reqs);
        }
        loop {
            reqs.push(self.requirement()?);
            match self.next() {
                Token::End => return Ok(reqs),
                Token::Comma => {}
                t => {
                    return Err(self.error(format!("found {}, expected: ',' or 'end of string'", t.describe())));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = *self.peek() == Token::Bang;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Ident(k) => k,
            t => return Err(self.error(format!("found {}, expected: identifier", t.describe()))),
        };
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        let op = match self.peek() {
            Token::Comma | Token::End => {
                return Requirement::new(&key, Operator::Exists, Vec::new());
            }
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Eq => Operator::Equals,
            Token::DoubleEq => Operator::DoubleEquals,
            Token::NotEq => Operator::NotEquals,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            t => {
                let found = t.describe();
                self.next();
                return Err(self.error(format!("found {found}, expected: in, notin, =, ==, !=, gt, lt")));
            }
        };
        self.next();
        let values = if matches!(op, Operator::In | Operator::NotIn) {
            self.value_set()?
        } else {
            // An exact match may compare with the empty value (`a=`).
            match self.peek().clone() {
                Token::Ident(v) => {
                    self.next();
                    vec![v]
                }
                Token::Comma | Token::End => vec![String::new()],
                t => {
                    self.next();
                    return Err(self.error(format!("found {}, expected: identifier", t.describe())));
                }
            }
        };
        Requirement::new(&key, op, values)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            t => return Err(self.error(format!("found {}, expected: '('", t.describe()))),
        }
        let mut values = Vec::new();
        // Kubernetes accepts empty members: `in ()` and `in (a,)` include "".
        let mut expect_value = true;
        loop {
            match self.next() {
                Token::Ident(v) if expect_value => {
                    values.push(v);
                    expect_value = false;
                }
                Token::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Token::Close => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                t => {
                    return Err(self.error(format!("found {}, expected: ',', ')' or identifier", t.describe())));
                }
            }
        }
    }
}
