//! Values a scenario writes as text: numbers and sizes (`4096`, `"2M"`,
//! `"0x1000"`, `"${i}*256+16"`), addresses (`"buf+4K"`) and conditions.
//!
//! Integer arithmetic (`+ - * /`, parentheses, size suffixes) is evaluated
//! here in a few lines: the expression crates that are kept up either
//! compute in floats (a 64-bit address loses bits) or bring a scripting
//! language and its licence with them, for what is at most `base + i * stride`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A bad value in a scenario file, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError(msg.into()))
}

/// A non-negative integer as a scenario writes it: a TOML integer or a
/// string holding an expression over integers with optional `K`, `M`, `G`
/// suffixes (powers of 1024) and hex literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Num(pub u64);

impl Num {
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn usize(self) -> usize {
        self.0 as usize
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer or an expression like \"2M\" or \"4K*3\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                u64::try_from(v)
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                eval(v).map(Num).map_err(|e| E::custom(e.0))
            }
        }
        d.deserialize_any(V)
    }
}

/// Evaluates an integer expression: `+ - * / %`, parentheses, decimal and
/// `0x` literals, `K`/`M`/`G` suffixes. Overflow, division by zero and a
/// negative result are errors.
pub fn eval(text: &str) -> Result<u64, ValueError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, at: 0 };
    let v = p.sum()?;
    if p.at != p.tokens.len() {
        return err(format!("unexpected text in {text:?}"));
    }
    u64::try_from(v).or_else(|_| err(format!("{text:?} is negative")))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Num(i128),
    Op(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>, ValueError> {
    let b = text.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_whitespace() || c == '_' {
            i += 1;
        } else if "+-*/%()".contains(c) {
            out.push(Token::Op(c));
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            let hex = b[i..].starts_with(b"0x") || b[i..].starts_with(b"0X");
            i += if hex { 2 } else { 0 };
            while i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b'_') {
                if !hex && !b[i].is_ascii_digit() && b[i] != b'_' {
                    break;
                }
                i += 1;
            }
            let digits: String = text[start..i].chars().filter(|c| *c != '_').collect();
            let v = if hex {
                i128::from_str_radix(&digits[2..], 16)
            } else {
                digits.parse::<i128>()
            }
            .or_else(|_| err(format!("bad number {digits:?} in {text:?}")))?;
            let mul: i128 = match b.get(i).map(|c| c.to_ascii_uppercase()) {
                Some(b'K') => 1 << 10,
                Some(b'M') => 1 << 20,
                Some(b'G') => 1 << 30,
                _ => 1,
            };
            if mul > 1 {
                i += 1;
            }
            out.push(Token::Num(checked(v.checked_mul(mul), text)?));
        } else {
            return err(format!(
                "unexpected {c:?} in {text:?} (is a ${{...}} undefined?)"
            ));
        }
    }
    Ok(out)
}

fn checked(v: Option<i128>, text: &str) -> Result<i128, ValueError> {
    match v {
        Some(v) if v.unsigned_abs() <= u64::MAX as u128 => Ok(v),
        _ => err(format!("{text:?} overflows 64 bits")),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.at).copied()
    }
    fn text(&self) -> String {
        format!("{:?}", self.tokens)
    }
    fn sum(&mut self) -> Result<i128, ValueError> {
        let mut v = self.product()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek() {
            self.at += 1;
            let r = self.product()?;
            let t = self.text();
            v = checked(
                if op == '+' {
                    v.checked_add(r)
                } else {
                    v.checked_sub(r)
                },
                &t,
            )?;
        }
        Ok(v)
    }
    fn product(&mut self) -> Result<i128, ValueError> {
        let mut v = self.atom()?;
        while let Some(Token::Op(op @ ('*' | '/' | '%'))) = self.peek() {
            self.at += 1;
            let r = self.atom()?;
            let t = self.text();
            let x = match op {
                '*' => v.checked_mul(r),
                '/' => v.checked_div(r),
                _ => v.checked_rem(r),
            };
            v = checked(x, &t)?;
        }
        Ok(v)
    }
    fn atom(&mut self) -> Result<i128, ValueError> {
        let t = self.peek();
        self.at += 1;
        match t {
            Some(Token::Num(v)) => Ok(v),
            Some(Token::Op('-')) => Ok(-self.atom()?),
            Some(Token::Op('(')) => {
                let v = self.sum()?;
                match self.peek() {
                    Some(Token::Op(')')) => {
                        self.at += 1;
                        Ok(v)
                    }
                    _ => err("a '(' without its ')'"),
                }
            }
            _ => err(format!("expected a number in {}", self.text())),
        }
    }
}

/// An address a step names: an allocation, buffer object or reservation,
/// plus a byte offset (`"buf"`, `"buf+4K"`, `"buf + ${i}*256"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub name: String,
    pub offset: u64,
}

impl Addr {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        let (name, off) = match text.find('+') {
            Some(i) => (text[..i].trim(), eval(&text[i + 1..])?),
            None => (text, 0),
        };
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !ok {
            return err(format!("bad address {text:?}: NAME or NAME+OFFSET"));
        }
        Ok(Self {
            name: name.to_string(),
            offset: off,
        })
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Addr::parse(&s).map_err(|e| de::Error::custom(e.0))
    }
}

/// A condition after substitution: `"true"`, `"false"`, `"!true"`, or a
/// comparison of two integer expressions (`"2 > 1"`, `"${n} == 4"`).
pub fn condition(text: &str) -> Result<bool, ValueError> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('!') {
        return Ok(!condition(rest)?);
    }
    match t {
        "true" => return Ok(true),
        "false" => return Ok(false),
        _ => {}
    }
    for op in ["==", "!=", ">=", "<=", ">", "<"] {
        if let Some(i) = t.find(op) {
            let (a, b) = (eval(&t[..i])?, eval(&t[i + op.len()..])?);
            return Ok(match op {
                "==" => a == b,
                "!=" => a != b,
                ">=" => a >= b,
                "<=" => a <= b,
                ">" => a > b,
                _ => a < b,
            });
        }
    }
    err(format!(
        "condition {text:?}: true, false, !X or a comparison"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_expressions() {
        assert_eq!(eval("2M").unwrap(), 2 << 20);
        assert_eq!(eval("4K*3+16").unwrap(), 12 * 1024 + 16);
        assert_eq!(eval("0x1000").unwrap(), 4096);
        assert_eq!(eval("(1+2)*256").unwrap(), 768);
        assert_eq!(eval("3*1M/2").unwrap(), 3 << 19);
        assert_eq!(eval("1_000").unwrap(), 1000);
        assert_eq!(eval("7 % 2").unwrap(), 1);
    }

    #[test]
    fn bad_expressions_are_errors() {
        assert!(eval("").is_err());
        assert!(eval("1-2").is_err(), "negative");
        assert!(eval("1/0").is_err());
        assert!(eval("16G*16G*16G").is_err(), "overflow");
        assert!(eval("${i}").is_err(), "an undefined variable");
        assert!(eval("(1").is_err());
        assert!(eval("2 3").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            Addr::parse("buf").unwrap(),
            Addr {
                name: "buf".into(),
                offset: 0
            }
        );
        assert_eq!(Addr::parse("a-1 + 4K*2").unwrap().offset, 8192);
        assert!(Addr::parse("+4").is_err());
        assert!(Addr::parse("b uf").is_err());
    }

    #[test]
    fn conditions() {
        assert!(condition("true").unwrap());
        assert!(!condition("!true").unwrap());
        assert!(condition("128 > 1").unwrap());
        assert!(!condition("1 >= 2").unwrap());
        assert!(condition("4 == 4").unwrap());
        assert!(condition("5 % 2 == 1").unwrap());
        assert!(condition("maybe").is_err());
    }
}
