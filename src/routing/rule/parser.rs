//! The expression grammar predicate accepts from `go/parser.ParseExpr`, restricted to what
//! Traefik can build a router from:
//!
//! ```text
//! expr    = and { "||" and }          (left-associative; `&&` binds tighter, as in Go)
//! and     = unary { "&&" unary }
//! unary   = "!" unary | primary
//! primary = "(" expr ")" | Name "(" [ string { "," string } [ "," ] ] ")"
//! ```
//!
//! Everything else Go would parse (numbers, identifiers as values, selectors, `...`, other
//! operators) makes predicate or Traefik fail, so it is an error here. Nesting depth and the
//! number of matchers are bounded so that no input can exhaust the stack.

use super::lexer::{Token, TokenKind};
use super::matchers::{self, Kind};
use super::{Expr, Matcher, Protocol, RuleError, Syntax, template};

/// Deepest nesting of parentheses and `!` accepted.
pub const MAX_DEPTH: usize = 64;
/// Most matchers one rule may hold (this also bounds the depth of `&&`/`||` chains).
pub const MAX_MATCHERS: usize = 256;

pub(super) struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    end_offset: usize,
    protocol: Protocol,
    syntax: Syntax,
    matchers: usize,
}

fn error(offset: usize, message: impl Into<String>) -> RuleError {
    RuleError {
        offset,
        message: message.into(),
    }
}

impl<'t> Parser<'t> {
    pub fn new(tokens: &'t [Token], end_offset: usize, protocol: Protocol, syntax: Syntax) -> Self {
        Parser {
            tokens,
            pos: 0,
            end_offset,
            protocol,
            syntax,
            matchers: 0,
        }
    }

    pub fn parse_rule(&mut self) -> Result<Expr, RuleError> {
        if self.tokens.is_empty() {
            return Err(error(0, "the rule is empty"));
        }
        let expr = self.or(0)?;
        if let Some(token) = self.peek() {
            return Err(error(
                token.offset,
                format!(
                    "unexpected {} after a complete expression (join matchers with `&&` or `||`)",
                    token.kind.describe()
                ),
            ));
        }
        Ok(expr)
    }

    fn peek(&self) -> Option<&'t Token> {
        self.tokens.get(self.pos)
    }

    fn next_is(&self, kind: &TokenKind) -> bool {
        self.peek().is_some_and(|t| &t.kind == kind)
    }

    fn here(&self) -> usize {
        self.peek().map_or(self.end_offset, |t| t.offset)
    }

    fn expect(&mut self, kind: TokenKind, context: &str) -> Result<(), RuleError> {
        match self.peek() {
            Some(t) if t.kind == kind => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => Err(error(
                t.offset,
                format!(
                    "expected {} {context}, found {}",
                    kind.describe(),
                    t.kind.describe()
                ),
            )),
            None => Err(error(
                self.end_offset,
                format!(
                    "expected {} {context}, found the end of the rule",
                    kind.describe()
                ),
            )),
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, RuleError> {
        let mut left = self.and(depth)?;
        while self.next_is(&TokenKind::OrOr) {
            self.pos += 1;
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, RuleError> {
        let mut left = self.unary(depth)?;
        while self.next_is(&TokenKind::AndAnd) {
            self.pos += 1;
            let right = self.unary(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, RuleError> {
        if depth >= MAX_DEPTH {
            return Err(error(
                self.here(),
                format!("the rule nests parentheses and `!` deeper than {MAX_DEPTH} levels"),
            ));
        }
        let Some(token) = self.peek() else {
            return Err(error(
                self.end_offset,
                "the rule ends where a matcher, `!` or `(` was expected",
            ));
        };
        match &token.kind {
            TokenKind::Not => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            TokenKind::LParen => {
                self.pos += 1;
                let inner = self.or(depth + 1)?;
                self.expect(TokenKind::RParen, "to close the parenthesis")?;
                Ok(inner)
            }
            TokenKind::Ident(name) => {
                self.pos += 1;
                self.matcher(name, token.offset)
            }
            other => Err(error(
                token.offset,
                format!(
                    "expected a matcher such as Host(`example.com`), `!` or `(`, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn matcher(&mut self, written: &str, offset: usize) -> Result<Expr, RuleError> {
        let Some(spec) = matchers::lookup(written, self.protocol, self.syntax) else {
            return Err(error(offset, self.unknown_matcher(written)));
        };
        self.matchers += 1;
        if self.matchers > MAX_MATCHERS {
            return Err(error(
                offset,
                format!("the rule has more than {MAX_MATCHERS} matchers"),
            ));
        }
        self.expect(TokenKind::LParen, &format!("after `{written}`"))?;
        let mut args = Vec::new();
        loop {
            let Some(token) = self.peek() else {
                return Err(error(
                    self.end_offset,
                    format!("`{written}(` is not closed with `)`"),
                ));
            };
            match &token.kind {
                TokenKind::RParen => {
                    self.pos += 1;
                    break;
                }
                TokenKind::Str(value) => {
                    self.pos += 1;
                    if value.is_empty() {
                        return Err(error(
                            token.offset,
                            format!("empty argument for {}", spec.name),
                        ));
                    }
                    args.push(value.clone());
                    if self.next_is(&TokenKind::Comma) {
                        self.pos += 1;
                    } else if !self.next_is(&TokenKind::RParen) {
                        self.expect(TokenKind::RParen, &format!("to close `{written}(`"))?;
                    }
                }
                other => {
                    return Err(error(
                        token.offset,
                        format!(
                            "arguments of {} must be strings (`...` or \"...\"), found {}",
                            spec.name,
                            other.describe()
                        ),
                    ));
                }
            }
        }
        if !spec.arity.accepts(args.len()) {
            return Err(error(
                offset,
                format!(
                    "{} takes {} in rule syntax {}, got {}",
                    spec.name,
                    spec.arity.describe(),
                    self.syntax.label(),
                    args.len()
                ),
            ));
        }
        let args = self.normalise_args(spec.name, spec.kind, args, offset)?;
        Ok(Expr::Matcher(Matcher {
            name: spec.name.to_string(),
            args,
        }))
    }

    /// v2 host templates become the Go regexp Traefik compiles from them, so an [`Expr`] means
    /// the same whatever syntax it was parsed in; v2 `Query` arguments must be `name=value`.
    fn normalise_args(
        &self,
        name: &str,
        kind: Kind,
        args: Vec<String>,
        offset: usize,
    ) -> Result<Vec<String>, RuleError> {
        match (self.syntax, kind, name) {
            (Syntax::V2, Kind::HostRegexp, _) => args
                .iter()
                .map(|t| {
                    template::host_template_regexp(t)
                        .map_err(|e| error(offset, format!("{name}(`{t}`): {e}")))
                })
                .collect(),
            (Syntax::V2, _, "Query") => match args.iter().find(|a| !a.contains('=')) {
                Some(bad) => Err(error(
                    offset,
                    format!("Query argument `{bad}` must be `name=value` in rule syntax v2"),
                )),
                None => Ok(args),
            },
            _ => Ok(args),
        }
    }

    fn unknown_matcher(&self, written: &str) -> String {
        let table = matchers::table(self.protocol, self.syntax);
        let known: Vec<&str> = table.iter().map(|s| s.name).collect();
        let near = table
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(written))
            .map(|s| {
                let [_, lower, upper, title] = matchers::spellings(s.name);
                format!(
                    " (Traefik accepts only the spellings {}, {lower}, {upper} and {title})",
                    s.name
                )
            })
            .unwrap_or_default();
        format!(
            "unknown matcher `{written}` for {} rules in syntax {}{near}; known: {}",
            self.protocol.label(),
            self.syntax.label(),
            known.join(", ")
        )
    }
}
