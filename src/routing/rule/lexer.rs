//! Tokens of a Traefik rule, scanned the way Go's `go/scanner` scans an expression (Traefik
//! hands the rule to `go/parser.ParseExpr` through vulcand/predicate).
//!
//! Only the tokens a rule can use are produced (identifiers, string literals, `(`, `)`, `,`,
//! `&&`, `||`, `!`); every other Go token is an error here because predicate refuses it too.
//! Two Go scanner rules matter for judging a rule the way Traefik does:
//! - automatic semicolon insertion: a line break after an identifier, a string literal or `)`
//!   ends the expression, so anything after it makes Go's parser fail; we refuse it too;
//! - NUL and the byte-order mark are illegal anywhere (Go skips a BOM only at offset 0; we refuse
//!   it there as well, since refusing more than Traefik is always safe).

use super::RuleError;

/// One token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: TokenKind,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenKind {
    Ident(String),
    /// A string literal's value (escapes already decoded).
    Str(String),
    LParen,
    RParen,
    Comma,
    AndAnd,
    OrOr,
    Not,
}

impl TokenKind {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::Ident(name) => format!("`{name}`"),
            TokenKind::Str(_) => "a string".into(),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Comma => "`,`".into(),
            TokenKind::AndAnd => "`&&`".into(),
            TokenKind::OrOr => "`||`".into(),
            TokenKind::Not => "`!`".into(),
        }
    }

    /// Go inserts a semicolon at a line break after these tokens.
    fn ends_line(&self) -> bool {
        matches!(
            self,
            TokenKind::Ident(_) | TokenKind::Str(_) | TokenKind::RParen
        )
    }
}

fn error(offset: usize, message: impl Into<String>) -> RuleError {
    RuleError {
        offset,
        message: message.into(),
    }
}

/// Splits `rule` into tokens (byte offsets; the caller turns them into character offsets).
pub(super) fn tokenize(rule: &str) -> Result<Vec<Token>, RuleError> {
    if let Some((at, ch)) = rule
        .char_indices()
        .find(|&(_, c)| c == '\0' || c == '\u{feff}')
    {
        let what = if ch == '\0' {
            "NUL character"
        } else {
            "byte-order mark (U+FEFF)"
        };
        return Err(error(at, format!("{what} is not allowed in a rule")));
    }
    let mut lexer = Lexer {
        src: rule,
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.src[self.pos..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn run(&mut self) -> Result<(), RuleError> {
        loop {
            let line_break_at = self.skip_blanks()?;
            if self.pos >= self.src.len() {
                return Ok(());
            }
            if let (Some(at), Some(last)) = (line_break_at, self.tokens.last())
                && last.kind.ends_line()
            {
                return Err(error(
                    at,
                    format!(
                        "line break after {} ends the rule here (Go inserts a semicolon); break \
                         lines only after `&&`, `||`, `!`, `(` or `,`",
                        last.kind.describe()
                    ),
                ));
            }
            let token = self.token()?;
            self.tokens.push(token);
        }
    }

    /// Skips whitespace and comments; returns where the first line break among them was.
    fn skip_blanks(&mut self) -> Result<Option<usize>, RuleError> {
        let mut line_break = None;
        loop {
            match (self.peek(), self.peek2()) {
                (Some('\n'), _) => {
                    line_break.get_or_insert(self.pos);
                    self.pos += 1;
                }
                (Some(' ' | '\t' | '\r'), _) => self.pos += 1,
                (Some('/'), Some('/')) => {
                    line_break.get_or_insert(self.pos);
                    match self.src[self.pos..].find('\n') {
                        Some(nl) => self.pos += nl,
                        None => self.pos = self.src.len(),
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.pos;
                    let Some(end) = self.src[start + 2..].find("*/") else {
                        return Err(error(start, "comment `/*` is not closed with `*/`"));
                    };
                    if self.src[start + 2..start + 2 + end].contains('\n') {
                        line_break.get_or_insert(start);
                    }
                    self.pos = start + 2 + end + 2;
                }
                _ => return Ok(line_break),
            }
        }
    }

    fn token(&mut self) -> Result<Token, RuleError> {
        let offset = self.pos;
        let c = self.bump().expect("token() is called before the end");
        let kind = match c {
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            ',' => TokenKind::Comma,
            '!' => TokenKind::Not,
            '&' if self.peek() == Some('&') => {
                self.pos += 1;
                TokenKind::AndAnd
            }
            '|' if self.peek() == Some('|') => {
                self.pos += 1;
                TokenKind::OrOr
            }
            '`' => TokenKind::Str(self.raw_string(offset)?),
            '"' => TokenKind::Str(self.interpreted_string(offset)?),
            c if c.is_ascii_alphabetic() || c == '_' => {
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
                    self.pos += 1;
                }
                TokenKind::Ident(self.src[offset..self.pos].to_string())
            }
            other => {
                let hint = match other {
                    '\'' => " (Go reads '...' as one character, not a string; use `...`)",
                    '&' => " (`&&` means and)",
                    '|' => " (`||` means or)",
                    ';' => " (a rule is one expression)",
                    _ => "",
                };
                return Err(error(
                    offset,
                    format!("unexpected character {other:?}{hint}"),
                ));
            }
        };
        Ok(Token { kind, offset })
    }

    /// A Go raw string: no escapes; carriage returns are dropped from the value.
    fn raw_string(&mut self, start: usize) -> Result<String, RuleError> {
        let body_start = self.pos;
        let Some(len) = self.src[body_start..].find('`') else {
            return Err(error(start, "raw string (`) is not closed"));
        };
        self.pos = body_start + len + 1;
        Ok(self.src[body_start..body_start + len].replace('\r', ""))
    }

    /// A Go interpreted string with Go's escapes; the decoded bytes must be UTF-8.
    fn interpreted_string(&mut self, start: usize) -> Result<String, RuleError> {
        let mut value: Vec<u8> = Vec::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None | Some('\n') => {
                    return Err(error(start, "string (\") is not closed on its line"));
                }
                Some('"') => break,
                Some('\\') => self.escape(at, &mut value)?,
                Some(c) => value.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        String::from_utf8(value).map_err(|_| {
            error(
                start,
                "string escapes (\\x.. or octal) spell bytes that are not UTF-8",
            )
        })
    }

    /// One escape after `\` (at `at`), as Go's scanner and strconv.Unquote read it.
    fn escape(&mut self, at: usize, value: &mut Vec<u8>) -> Result<(), RuleError> {
        let simple = |b: u8| Some(b);
        let byte = match self.bump() {
            Some('a') => simple(0x07),
            Some('b') => simple(0x08),
            Some('f') => simple(0x0c),
            Some('n') => simple(b'\n'),
            Some('r') => simple(b'\r'),
            Some('t') => simple(b'\t'),
            Some('v') => simple(0x0b),
            Some('\\') => simple(b'\\'),
            Some('"') => simple(b'"'),
            Some(d @ '0'..='7') => {
                let mut n = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.bump().and_then(|c| c.to_digit(8)) {
                        Some(digit) => n = n * 8 + digit,
                        None => return Err(error(at, "octal escape needs exactly 3 digits")),
                    }
                }
                if n > 255 {
                    return Err(error(at, format!("octal escape \\{n:o} is above \\377")));
                }
                Some(n as u8)
            }
            Some('x') => Some(self.hex_digits(at, 2)? as u8),
            Some(kind @ ('u' | 'U')) => {
                let n = self.hex_digits(at, if kind == 'u' { 4 } else { 8 })?;
                let Some(c) = char::from_u32(n) else {
                    return Err(error(
                        at,
                        format!("escape \\{kind}{n:X} is not a Unicode code point"),
                    ));
                };
                value.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                None
            }
            Some(other) => {
                return Err(error(at, format!("unknown escape sequence \\{other}")));
            }
            None => return Err(error(at, "string (\") is not closed")),
        };
        value.extend(byte);
        Ok(())
    }

    fn hex_digits(&mut self, at: usize, count: usize) -> Result<u32, RuleError> {
        let mut n: u32 = 0;
        for _ in 0..count {
            match self.bump().and_then(|c| c.to_digit(16)) {
                Some(digit) => n = (n << 4) | digit,
                None => {
                    return Err(error(
                        at,
                        format!("escape needs exactly {count} hexadecimal digits"),
                    ));
                }
            }
        }
        Ok(n)
    }
}
