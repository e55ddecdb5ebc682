//! SQL scripts: splitting text into statements and filling `${name}` parameters.
//!
//! A script is the unit `quiver submit` runs as one job. Statements end with `;`
//! (the last one may omit it). Semicolons inside string literals, quoted
//! identifiers and comments do not split. `${name}` placeholders are replaced by
//! `--param name=value` values everywhere except in comments, so an orchestrator
//! can pass dates the way it does to `spark-sql -d`:
//!
//! ```
//! use std::collections::BTreeMap;
//! use quiver_core::script::Script;
//! let params = BTreeMap::from([("day".to_string(), "2024-01-31".to_string())]);
//! let script = Script::parse("SET x = 1;\nSELECT * FROM t WHERE d = '${day}'", &params).unwrap();
//! assert_eq!(script.statements.len(), 2);
//! assert_eq!(script.statements[1].sql, "SELECT * FROM t WHERE d = '2024-01-31'");
//! assert_eq!(script.statements[1].line, 2);
//! ```

use std::collections::BTreeMap;

/// Errors in a script's text, found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// A `${name}` with no value given.
    #[error("line {line}: parameter ${{{name}}} has no value; pass it with --param {name}=VALUE")]
    MissingParam {
        /// The parameter's name.
        name: String,
        /// 1-based line of the placeholder.
        line: usize,
    },
    /// A `${` with no closing `}`, or an empty name.
    #[error("line {line}: malformed parameter placeholder; write ${{name}}")]
    BadPlaceholder {
        /// 1-based line of the placeholder.
        line: usize,
    },
    /// A string, quoted identifier or block comment is never closed.
    #[error("line {line}: {what} is never closed")]
    Unterminated {
        /// What was left open.
        what: &'static str,
        /// 1-based line where it opened.
        line: usize,
    },
    /// The script contains no statement.
    #[error("the script contains no SQL statement")]
    Empty,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// 1-based position in the script.
    pub index: usize,
    /// 1-based line where the statement starts.
    pub line: usize,
    /// The statement's text with parameters filled in, without the trailing `;`.
    pub sql: String,
}

impl Statement {
    /// The first non-empty line of the statement, for messages.
    pub fn first_line(&self) -> &str {
        first_code_line(&self.sql)
    }

    /// True when running the statement again can change nothing: a query
    /// (without `SELECT ... INTO`), `EXPLAIN` (`EXPLAIN ANALYZE` only of such
    /// a statement), `SHOW` or `DESCRIBE`. A statement the parser does not
    /// know counts as a write.
    ///
    /// ```
    /// use quiver_core::script::Statement;
    /// let read = Statement { index: 1, line: 1, sql: "WITH t AS (SELECT 1) SELECT * FROM t".into() };
    /// let write = Statement { index: 2, line: 2, sql: "INSERT INTO t VALUES (1)".into() };
    /// assert!(read.is_read_only());
    /// assert!(!write.is_read_only());
    /// ```
    pub fn is_read_only(&self) -> bool {
        use datafusion::sql::sqlparser::dialect::GenericDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        match Parser::parse_sql(&GenericDialect {}, &self.sql) {
            Ok(parsed) => parsed.len() == 1 && reads_only(&parsed[0]),
            Err(_) => false,
        }
    }
}

fn reads_only(statement: &datafusion::sql::sqlparser::ast::Statement) -> bool {
    use datafusion::sql::sqlparser::ast::{SetExpr, Statement as Ast};
    match statement {
        Ast::Query(query) => !matches!(query.body.as_ref(), SetExpr::Select(select) if select.into.is_some()),
        Ast::Explain { statement, analyze, .. } => !analyze || reads_only(statement),
        Ast::ExplainTable { .. }
        | Ast::ShowTables { .. }
        | Ast::ShowColumns { .. }
        | Ast::ShowVariable { .. }
        | Ast::ShowVariables { .. }
        | Ast::ShowCreate { .. }
        | Ast::ShowFunctions { .. }
        | Ast::ShowSchemas { .. }
        | Ast::ShowDatabases { .. }
        | Ast::ShowCatalogs { .. }
        | Ast::ShowViews { .. } => true,
        _ => false,
    }
}

/// The values `sql` gives to secret settings: `SET s3.secret_access_key = '...'`
/// and secret keys among the `OPTIONS (...)` of `CREATE EXTERNAL TABLE` and
/// `COPY`. Text that does not parse is still searched for such a `SET`.
///
/// ```
/// use quiver_core::script::secret_values;
/// assert_eq!(secret_values("SET s3.secret_access_key = 'k3y-value'"), ["k3y-value"]);
/// assert_eq!(secret_values("SET s3.region TO 'eu-west-1'"), Vec::<String>::new());
/// ```
pub fn secret_values(sql: &str) -> Vec<String> {
    use crate::secret::is_secret_key;
    use datafusion::sql::parser::{DFParser, Statement as Df};
    use datafusion::sql::sqlparser::ast::{Expr, Set, Statement as Ast};

    let Ok(statements) = DFParser::parse_sql(sql) else {
        return set_value_in_text(sql).into_iter().collect();
    };
    let options = |pairs: &[(String, datafusion::sql::sqlparser::ast::Value)]| -> Vec<String> {
        pairs
            .iter()
            .filter(|(key, _)| is_secret_key(key))
            .map(|(_, value)| value.clone().into_string().unwrap_or_else(|| value.to_string()))
            .collect()
    };
    let mut values = Vec::new();
    for statement in statements {
        match statement {
            Df::Statement(ast) => {
                if let Ast::Set(Set::SingleAssignment {
                    variable, values: set, ..
                }) = *ast
                    && is_secret_key(&variable.to_string())
                {
                    values.extend(set.into_iter().map(|e| match e {
                        Expr::Value(v) => v.clone().into_string().unwrap_or_else(|| v.to_string()),
                        other => other.to_string(),
                    }));
                }
            }
            Df::CreateExternalTable(create) => values.extend(options(&create.options)),
            Df::CopyTo(copy) => values.extend(options(&copy.options)),
            _ => {}
        }
    }
    values
}

/// The value of a `SET <secret key> = value` the parser could not read.
fn set_value_in_text(sql: &str) -> Option<String> {
    static SET: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?is)^\s*set\s+([\w.]+)\s*(?:=|\s+to\s+)\s*(.*?)\s*;?\s*$").expect("valid regex")
    });
    let caps = SET.captures(sql)?;
    crate::secret::is_secret_key(&caps[1]).then(|| caps[2].trim_matches(['\'', '"']).to_owned())
}

/// The first line of `sql` that is neither empty nor a `--` comment.
pub fn first_code_line(sql: &str) -> &str {
    sql.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .unwrap_or("")
}

/// [`first_code_line`] cut to `max` characters, with `…` when cut.
pub fn short_first_line(sql: &str, max: usize) -> String {
    let line = first_code_line(sql);
    let mut out: String = line.chars().take(max).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// A parsed script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The statements, in order.
    pub statements: Vec<Statement>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    Single,
    Double,
    Backtick,
    LineComment,
    BlockComment,
}

impl State {
    /// The character that ends a quoted state.
    fn closing_quote(self) -> char {
        match self {
            State::Single => '\'',
            State::Double => '"',
            _ => '`',
        }
    }
}

impl Script {
    /// Splits `text` into statements and fills `${name}` from `params`.
    pub fn parse(text: &str, params: &BTreeMap<String, String>) -> Result<Script, ScriptError> {
        let mut statements = Vec::new();
        let mut current = String::new();
        let mut has_code = false;
        let mut start_line = 1;
        let mut line = 1;
        let mut opened_at = 1;
        let mut state = State::Code;
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;

        let mut finish = |current: &mut String, has_code: &mut bool, start_line: usize| {
            let sql = current.trim().to_owned();
            if *has_code {
                statements.push(Statement {
                    index: statements.len() + 1,
                    line: start_line,
                    sql,
                });
            }
            current.clear();
            *has_code = false;
        };

        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match state {
                State::Code => {
                    if c == '$' && next == Some('{') {
                        let (value, consumed) = substitute(&chars[i..], params, line)?;
                        if !has_code {
                            start_line = line;
                        }
                        has_code = true;
                        current.push_str(&value);
                        i += consumed;
                        continue;
                    }
                    match (c, next) {
                        (';', _) => {
                            finish(&mut current, &mut has_code, start_line);
                            i += 1;
                            continue;
                        }
                        ('-', Some('-')) => state = State::LineComment,
                        ('/', Some('*')) => {
                            state = State::BlockComment;
                            opened_at = line;
                            current.push_str("/*");
                            i += 2;
                            continue;
                        }
                        ('\'', _) => (state, opened_at) = (State::Single, line),
                        ('"', _) => (state, opened_at) = (State::Double, line),
                        ('`', _) => (state, opened_at) = (State::Backtick, line),
                        _ => {}
                    }
                    if state != State::LineComment && state != State::BlockComment && !c.is_whitespace() {
                        if !has_code {
                            start_line = line;
                        }
                        has_code = true;
                    }
                }
                State::Single | State::Double | State::Backtick => {
                    let quote = state.closing_quote();
                    if c == '$' && next == Some('{') && state == State::Single {
                        let (value, consumed) = substitute(&chars[i..], params, line)?;
                        current.push_str(&value);
                        i += consumed;
                        continue;
                    }
                    if c == quote {
                        if next == Some(quote) {
                            // Doubled quote: an escaped quote inside the literal.
                            current.push(c);
                            current.push(c);
                            i += 2;
                            continue;
                        }
                        state = State::Code;
                    }
                }
                State::LineComment => {
                    if c == '\n' {
                        state = State::Code;
                    }
                }
                State::BlockComment => {
                    if c == '*' && next == Some('/') {
                        state = State::Code;
                        current.push_str("*/");
                        i += 2;
                        continue;
                    }
                }
            }
            if c == '\n' {
                line += 1;
            }
            current.push(c);
            i += 1;
        }

        match state {
            State::Single => {
                return Err(ScriptError::Unterminated {
                    what: "a string literal",
                    line: opened_at,
                });
            }
            State::Double | State::Backtick => {
                return Err(ScriptError::Unterminated {
                    what: "a quoted identifier",
                    line: opened_at,
                });
            }
            State::BlockComment => {
                return Err(ScriptError::Unterminated {
                    what: "a /* comment",
                    line: opened_at,
                });
            }
            State::Code | State::LineComment => {}
        }
        finish(&mut current, &mut has_code, start_line);
        if statements.is_empty() {
            return Err(ScriptError::Empty);
        }
        Ok(Script { statements })
    }
}

/// True when `text` ends with a `;` that terminates a statement (not one inside
/// a string, quoted identifier or comment): what a shell waits for before it
/// runs what was typed.
///
/// ```
/// use quiver_core::script::is_complete;
/// assert!(is_complete("SELECT 1;"));
/// assert!(!is_complete("SELECT ';"));
/// assert!(is_complete("SELECT 1; -- done"));
/// assert!(!is_complete("SELECT 1 -- done;"));
/// assert!(!is_complete("SELECT 1"));
/// ```
pub fn is_complete(text: &str) -> bool {
    let mut state = State::Code;
    let mut last_code = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        match state {
            State::Code => match (c, next) {
                ('-', Some('-')) => state = State::LineComment,
                ('/', Some('*')) => {
                    state = State::BlockComment;
                    i += 1;
                }
                ('\'', _) => state = State::Single,
                ('"', _) => state = State::Double,
                ('`', _) => state = State::Backtick,
                _ if !c.is_whitespace() => last_code = Some(c),
                _ => {}
            },
            State::Single | State::Double | State::Backtick => {
                let quote = state.closing_quote();
                if c == quote {
                    if next == Some(quote) {
                        i += 1;
                    } else {
                        state = State::Code;
                        last_code = Some(c);
                    }
                }
            }
            State::LineComment => {
                if c == '\n' {
                    state = State::Code;
                }
            }
            State::BlockComment => {
                if c == '*' && next == Some('/') {
                    state = State::Code;
                    i += 1;
                }
            }
        }
        i += 1;
    }
    matches!(state, State::Code | State::LineComment) && last_code == Some(';')
}

/// Replaces the `${name}` at the start of `chars`; returns the value and the
/// number of characters consumed.
fn substitute(chars: &[char], params: &BTreeMap<String, String>, line: usize) -> Result<(String, usize), ScriptError> {
    let close = chars
        .iter()
        .position(|&c| c == '}' || c == '\n')
        .filter(|&p| chars[p] == '}')
        .ok_or(ScriptError::BadPlaceholder { line })?;
    let name: String = chars[2..close].iter().collect();
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        return Err(ScriptError::BadPlaceholder { line });
    }
    let value = params.get(name).ok_or_else(|| ScriptError::MissingParam {
        name: name.to_owned(),
        line,
    })?;
    Ok((value.clone(), close + 1))
}

/// Byte offset of a 1-based (line, column) position in `text`, columns
/// counted in chars: where the SQL parser's token positions point.
pub(crate) fn offset_of(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            return offset
                + l.char_indices()
                    .nth(column as usize - 1)
                    .map(|(b, _)| b)
                    .unwrap_or(l.len());
        }
        offset += l.len();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_statements_are_told_from_writes() {
        let is_read = |sql: &str| {
            Statement {
                index: 1,
                line: 1,
                sql: sql.into(),
            }
            .is_read_only()
        };
        for sql in [
            "SELECT 1",
            "select a, count(*) from t group by a order by 2 desc limit 3",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x UNION ALL SELECT 2",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT * FROM t",
            "SHOW TABLES",
            "DESCRIBE t",
        ] {
            assert!(is_read(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t SELECT * FROM u",
            "CREATE TABLE t AS SELECT 1",
            "SELECT 1 INTO t",
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            "COPY t TO 's3://b/x'",
            "DELETE FROM t WHERE a = 1",
            "SET s3.region = 'x'",
            "SELECT 1; SELECT 2",
            "not sql at all",
        ] {
            assert!(!is_read(sql), "{sql}");
        }
    }

    fn split(text: &str) -> Vec<String> {
        Script::parse(text, &BTreeMap::new())
            .unwrap()
            .statements
            .into_iter()
            .map(|s| s.sql)
            .collect()
    }

    #[test]
    fn semicolons_in_strings_comments_and_identifiers_do_not_split() {
        let stmts = split("SELECT 'a;b', \"c;d\" FROM t; -- x; y\nSELECT 1 /* ; */ ;\nSELECT 'it''s;';");
        assert_eq!(
            stmts,
            vec![
                "SELECT 'a;b', \"c;d\" FROM t",
                "-- x; y\nSELECT 1 /* ; */",
                "SELECT 'it''s;'"
            ]
        );
    }

    #[test]
    fn comment_only_and_empty_pieces_are_not_statements() {
        assert_eq!(split(";;SELECT 1;\n-- trailing comment\n"), vec!["SELECT 1"]);
        assert_eq!(Script::parse("-- nothing\n", &BTreeMap::new()), Err(ScriptError::Empty));
    }

    #[test]
    fn statements_know_their_line_and_first_line() {
        let s = Script::parse("\n\n-- heading\nSELECT a,\n  b FROM t;\nSELECT 2", &BTreeMap::new()).unwrap();
        assert_eq!(s.statements[0].line, 4);
        assert_eq!(s.statements[0].first_line(), "SELECT a,");
        assert_eq!(s.statements[1].line, 6);
        assert_eq!(s.statements[1].index, 2);
    }

    #[test]
    fn params_fill_code_and_strings_but_not_comments() {
        let params = BTreeMap::from([("t".to_string(), "orders".to_string())]);
        let s = Script::parse("-- uses ${undefined}\nSELECT '${t}' FROM ${t}", &params).unwrap();
        assert_eq!(s.statements[0].sql, "-- uses ${undefined}\nSELECT 'orders' FROM orders");
    }

    #[test]
    fn missing_and_malformed_params_name_the_line() {
        let err = Script::parse("SELECT 1;\nSELECT ${day}", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err,
            ScriptError::MissingParam {
                name: "day".into(),
                line: 2
            }
        );
        assert!(err.to_string().contains("--param day=VALUE"));
        let err = Script::parse("SELECT ${ }", &BTreeMap::new()).unwrap_err();
        assert_eq!(err, ScriptError::BadPlaceholder { line: 1 });
        let err = Script::parse("SELECT ${day", &BTreeMap::new()).unwrap_err();
        assert_eq!(err, ScriptError::BadPlaceholder { line: 1 });
    }

    #[test]
    fn unterminated_literals_are_reported() {
        let err = Script::parse("SELECT 1;\nSELECT 'oops", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err,
            ScriptError::Unterminated {
                what: "a string literal",
                line: 2
            }
        );
        let err = Script::parse("SELECT /* x", &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, ScriptError::Unterminated { line: 1, .. }));
    }

    #[test]
    fn offsets_count_characters() {
        assert_eq!(offset_of("ab\nçd x", 2, 4), "ab\nçd ".len());
    }
}
