//! Tokenizer for one routes-file line (grip-spec §8.1).
//!
//! A line is a list of whitespace-separated *tokens*; a token is a list of comma-separated
//! *props*; a prop is `key` or `key=value`. Double quotes group text that contains spaces,
//! commas, `=` or `#`; inside quotes only `\\` and `\"` are escapes. An unquoted `#` starts a
//! comment that runs to the end of the line. Pure: no I/O.

/// One `key` or `key=value` item of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prop {
    pub key: String,
    pub value: Option<String>,
}

/// One whitespace-separated token: its props in order (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub props: Vec<Prop>,
    /// The token's text as written (quotes included), for derived route IDs and messages.
    pub raw: String,
}

/// Builds props and tokens while scanning characters.
#[derive(Default)]
struct Builder {
    tokens: Vec<Token>,
    props: Vec<Prop>,
    key: String,
    value: Option<String>,
    raw: String,
    /// True once the current prop has any content (or quotes), so `""` is an empty value
    /// rather than nothing.
    prop_started: bool,
}

impl Builder {
    fn push_char(&mut self, c: char) {
        match &mut self.value {
            Some(v) => v.push(c),
            None => self.key.push(c),
        }
        self.prop_started = true;
    }

    fn end_prop(&mut self) -> Result<(), String> {
        if !self.prop_started {
            // `a,,b` or a trailing comma: an empty prop is a syntax error.
            if !self.props.is_empty() || !self.raw.is_empty() {
                return Err(format!("empty property in \"{}\"", self.raw));
            }
            return Ok(());
        }
        let key = std::mem::take(&mut self.key);
        if key.is_empty() {
            return Err(format!("property with an empty name in \"{}\"", self.raw));
        }
        self.props.push(Prop {
            key,
            value: self.value.take(),
        });
        self.prop_started = false;
        Ok(())
    }

    fn end_token(&mut self) -> Result<(), String> {
        if self.raw.is_empty() {
            debug_assert!(self.props.is_empty() && !self.prop_started);
            return Ok(());
        }
        self.end_prop()?;
        debug_assert!(!self.props.is_empty());
        self.tokens.push(Token {
            props: std::mem::take(&mut self.props),
            raw: std::mem::take(&mut self.raw),
        });
        Ok(())
    }
}

/// Splits one line into tokens. Returns an empty list for a blank or comment-only line.
pub(crate) fn lex_line(line: &str) -> Result<Vec<Token>, String> {
    let mut b = Builder::default();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            c if c.is_whitespace() => b.end_token()?,
            ',' => {
                b.raw.push(c);
                // A comma right at the start of a token is an empty first prop.
                if b.raw.len() == 1 {
                    return Err(format!("token starts with a comma: \"{}\"", line.trim()));
                }
                b.end_prop()?;
            }
            '=' if b.value.is_none() => {
                b.raw.push(c);
                b.value = Some(String::new());
                b.prop_started = true;
            }
            '"' => {
                b.raw.push(c);
                b.prop_started = true;
                loop {
                    let Some(q) = chars.next() else {
                        return Err(format!("unterminated quote in \"{}\"", b.raw));
                    };
                    b.raw.push(q);
                    match q {
                        '"' => break,
                        '\\' => {
                            let Some(e) = chars.next() else {
                                return Err(format!("unterminated quote in \"{}\"", b.raw));
                            };
                            b.raw.push(e);
                            match e {
                                '\\' | '"' => b.push_char(e),
                                other => {
                                    return Err(format!(
                                        "invalid escape \"\\{other}\" in a quoted value (only \\\\ and \\\" are allowed)"
                                    ))
                                }
                            }
                        }
                        other => b.push_char(other),
                    }
                }
            }
            other => {
                b.raw.push(other);
                b.push_char(other);
            }
        }
    }
    b.end_token()?;
    Ok(b.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: Option<&str>) -> Prop {
        Prop {
            key: key.to_string(),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn blank_and_comment_lines_are_empty() {
        assert_eq!(lex_line("").unwrap(), vec![]);
        assert_eq!(lex_line("   \t ").unwrap(), vec![]);
        assert_eq!(lex_line("  # just a comment").unwrap(), vec![]);
    }

    #[test]
    fn tokens_props_and_comment() {
        let t = lex_line("*,path_beg=/a,ssl=yes  localhost:80,over_http  # tail").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].props,
            vec![
                p("*", None),
                p("path_beg", Some("/a")),
                p("ssl", Some("yes"))
            ]
        );
        assert_eq!(t[0].raw, "*,path_beg=/a,ssl=yes");
        assert_eq!(
            t[1].props,
            vec![p("localhost:80", None), p("over_http", None)]
        );
    }

    #[test]
    fn quotes_group_and_escape() {
        let t = lex_line(r#"*,header="X-A: b c, d=#e",prefix="q\"\\z" x:1"#).unwrap();
        assert_eq!(t[0].props[1], p("header", Some("X-A: b c, d=#e")));
        assert_eq!(t[0].props[2], p("prefix", Some(r#"q"\z"#)));
        assert_eq!(t[1].props, vec![p("x:1", None)]);
        // An empty quoted value is a present, empty value.
        let t = lex_line(r#"*,prefix="" x:1"#).unwrap();
        assert_eq!(t[0].props[1], p("prefix", Some("")));
        // `=` inside a value is kept literally.
        let t = lex_line("*,header=A:b=c x:1").unwrap();
        assert_eq!(t[0].props[1], p("header", Some("A:b=c")));
    }

    #[test]
    fn syntax_errors() {
        assert!(lex_line(r#"*,prefix="abc x:1"#)
            .unwrap_err()
            .contains("unterminated quote"));
        assert!(lex_line(r#"*,prefix="a\nb" x:1"#)
            .unwrap_err()
            .contains("invalid escape"));
        assert!(lex_line("*,,ssl=yes x:1")
            .unwrap_err()
            .contains("empty property"));
        assert!(lex_line("*, x:1").unwrap_err().contains("empty property"));
        assert!(lex_line("*,=v x:1").unwrap_err().contains("empty name"));
        assert!(lex_line(",a x:1")
            .unwrap_err()
            .contains("starts with a comma"));
    }
}
