//! `CREATE TABLE ... AS SELECT` into files: the syntax Spark and Hive users write.
//!
//! DataFusion's own `CREATE TABLE AS` builds an in-memory table in the client,
//! which a cluster cannot read. Quiver instead writes the query's result as
//! files at the table's `LOCATION` (from the executors) and registers an
//! external table over them. Accepted forms:
//!
//! ```sql
//! CREATE TABLE t USING parquet PARTITIONED BY (region) LOCATION 's3://b/t/' AS SELECT ...;   -- Spark
//! CREATE TABLE t STORED AS PARQUET LOCATION 's3://b/t/' AS SELECT ...;                        -- Hive
//! CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/data/t/' AS SELECT ...;                    -- DataFusion style
//! CREATE TABLE t AS SELECT ...;                          -- Parquet in the warehouse: <quiver.warehouse_dir>/t/
//! ```
//!
//! ```
//! use quiver_core::ctas::{parse_ctas, TableFormat};
//! let c = parse_ctas("CREATE TABLE t USING parquet LOCATION 's3://b/t/' AS SELECT 1 AS x").unwrap().unwrap();
//! assert_eq!(c.format, TableFormat::Parquet);
//! assert_eq!(c.query, "SELECT 1 AS x");
//! ```

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// File formats a `CREATE TABLE AS` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
    /// Newline-delimited JSON.
    Json,
    /// A Delta Lake table (Parquet files and a transaction log).
    Delta,
}

impl TableFormat {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "ndjson" => Some(Self::Json),
            "delta" | "deltatable" => Some(Self::Delta),
            _ => None,
        }
    }

    /// The name used in `STORED AS`.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Parquet => "PARQUET",
            Self::Csv => "CSV",
            Self::Json => "JSON",
            Self::Delta => "DELTA",
        }
    }
}

/// A parsed `CREATE TABLE ... AS <query>` that writes files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTableAs {
    /// The table's name as written.
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// `OR REPLACE` was given.
    pub or_replace: bool,
    /// The file format.
    pub format: TableFormat,
    /// Where the files go; `None` to let the warehouse place them
    /// ([`CreateTableAs::location_in`]).
    pub location: Option<String>,
    /// Hive-style partition columns.
    pub partition_by: Vec<String>,
    /// Format options (`OPTIONS ('k' 'v', ...)`).
    pub options: BTreeMap<String, String>,
    /// The query's text.
    pub query: String,
}

/// Recognises a `CREATE TABLE ... AS` statement.
///
/// Returns `Ok(None)` for any other statement, `Err` with a message for a
/// `CREATE TABLE ... AS` that Quiver cannot run.
pub fn parse_ctas(sql: &str) -> Result<Option<CreateTableAs>, String> {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return Ok(None); // Let the engine report the syntax error.
    };
    let tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut p = Cursor {
        tokens: &tokens,
        pos: 0,
    };

    if !p.keyword(Keyword::CREATE) {
        return Ok(None);
    }
    let or_replace = p.keyword(Keyword::OR) && p.keyword(Keyword::REPLACE);
    p.keyword(Keyword::EXTERNAL);
    if !p.keyword(Keyword::TABLE) {
        return Ok(None);
    }
    let if_not_exists = p.keyword(Keyword::IF) && p.keyword(Keyword::NOT) && p.keyword(Keyword::EXISTS);
    let name = p.object_name().ok_or("expected a table name after CREATE TABLE")?;

    let mut format = None;
    let mut location = None;
    let mut partition_by = Vec::new();
    let mut options = BTreeMap::new();
    loop {
        if p.keyword(Keyword::STORED) {
            if !p.keyword(Keyword::AS) {
                return Err("expected AS after STORED".into());
            }
            format = Some(p.format_name()?);
        } else if p.keyword(Keyword::USING) {
            format = Some(p.format_name()?);
        } else if p.keyword(Keyword::LOCATION) {
            location = Some(p.string().ok_or("expected a quoted path after LOCATION")?);
        } else if p.keyword(Keyword::PARTITIONED) {
            if !p.keyword(Keyword::BY) {
                return Err("expected BY after PARTITIONED".into());
            }
            partition_by = p.column_list()?;
        } else if p.keyword(Keyword::OPTIONS) {
            options = p.option_list()?;
        } else if p.peek_keyword(Keyword::AS) {
            break;
        } else {
            // Column definitions, WITH properties, ...: not a file CTAS.
            return Ok(None);
        }
    }
    // Only now is it a CREATE TABLE AS: a table over files of another
    // format (STORED AS ARROW, AVRO) without a query is DataFusion's.
    let format = match format {
        Some(name) => TableFormat::parse(&name).ok_or_else(|| {
            format!("CREATE TABLE AS writes parquet, csv, json or delta; '{name}' is not one of them")
        })?,
        None => TableFormat::Parquet,
    };
    let as_token = &tokens[p.pos];
    p.pos += 1;
    if p.pos >= tokens.len() || matches!(tokens[p.pos].token, Token::EOF) {
        return Err("expected a query after AS".into());
    }
    let query_start = crate::script::offset_of(sql, tokens[p.pos].span.start.line, tokens[p.pos].span.start.column);
    let _ = as_token;
    let query = sql[query_start..].trim().trim_end_matches(';').trim().to_owned();

    Ok(Some(CreateTableAs {
        name,
        if_not_exists,
        or_replace,
        format,
        location,
        partition_by,
        options,
        query,
    }))
}

impl CreateTableAs {
    /// Where the table's files go: its `LOCATION`, or else a directory named
    /// after the table in `warehouse` (`quiver.warehouse_dir`, as Spark's
    /// `spark.sql.warehouse.dir` places managed tables). Unquoted names are
    /// lower-cased, and each part of a qualified name is a directory.
    ///
    /// ```
    /// use quiver_core::ctas::parse_ctas;
    /// let c = parse_ctas("CREATE TABLE Sales.Daily AS SELECT 1 AS x").unwrap().unwrap();
    /// assert_eq!(c.location_in(Some("s3://lake/warehouse")).unwrap(), "s3://lake/warehouse/sales/daily/");
    /// assert!(c.location_in(None).unwrap_err().contains("quiver.warehouse_dir"));
    /// ```
    pub fn location_in(&self, warehouse: Option<&str>) -> Result<String, String> {
        if let Some(location) = &self.location {
            return Ok(location.clone());
        }
        let Some(warehouse) = warehouse.filter(|w| !w.trim().is_empty()) else {
            return Err(format!(
                "CREATE TABLE {name} AS SELECT needs a LOCATION the executors can write to, or a warehouse \
                 for tables without one: CREATE TABLE {name} USING parquet LOCATION 's3://bucket/path/' AS \
                 SELECT ..., or SET quiver.warehouse_dir = 's3://bucket/warehouse/'",
                name = self.name
            ));
        };
        let mut dir = warehouse.trim().trim_end_matches('/').to_owned();
        for part in self.name.split('.') {
            let unquoted = part.trim_matches(|c| c == '"' || c == '`');
            if unquoted.is_empty() || unquoted == ".." || unquoted.contains('/') {
                return Err(format!(
                    "table name {} cannot name a directory in the warehouse",
                    self.name
                ));
            }
            dir.push('/');
            if unquoted.len() == part.len() {
                dir.push_str(&unquoted.to_lowercase());
            } else {
                dir.push_str(unquoted);
            }
        }
        dir.push('/');
        Ok(dir)
    }
}

struct Cursor<'a> {
    tokens: &'a [TokenWithSpan],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.token)
    }

    fn peek_keyword(&self, kw: Keyword) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.keyword == kw)
    }

    fn keyword(&mut self, kw: Keyword) -> bool {
        let hit = self.peek_keyword(kw);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn word(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let s = match w.quote_style {
                    Some(q) => format!("{q}{}{q}", w.value),
                    None => w.value.clone(),
                };
                self.pos += 1;
                Some(s)
            }
            _ => None,
        }
    }

    fn object_name(&mut self) -> Option<String> {
        let mut name = self.word()?;
        while matches!(self.peek(), Some(Token::Period)) {
            self.pos += 1;
            name.push('.');
            name.push_str(&self.word()?);
        }
        Some(name)
    }

    fn string(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::SingleQuotedString(s)) => {
                let s = s.clone();
                self.pos += 1;
                Some(s)
            }
            _ => None,
        }
    }

    fn format_name(&mut self) -> Result<String, String> {
        self.word()
            .ok_or_else(|| "expected a file format after STORED AS or USING".to_owned())
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), String> {
        if self.peek() == Some(&token) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {what}"))
        }
    }

    fn column_list(&mut self) -> Result<Vec<String>, String> {
        self.expect(Token::LParen, "( after PARTITIONED BY")?;
        let mut cols = Vec::new();
        loop {
            let col = self.word().ok_or("expected a column name in PARTITIONED BY")?;
            cols.push(col.trim_matches('"').to_owned());
            // A type after the name (Hive style) is allowed and ignored: the
            // query decides the column's type.
            while matches!(self.peek(), Some(Token::Word(_))) {
                self.pos += 1;
            }
            match self.peek() {
                Some(Token::Comma) => self.pos += 1,
                Some(Token::RParen) => {
                    self.pos += 1;
                    return Ok(cols);
                }
                _ => return Err("expected , or ) in PARTITIONED BY".into()),
            }
        }
    }

    fn option_list(&mut self) -> Result<BTreeMap<String, String>, String> {
        self.expect(Token::LParen, "( after OPTIONS")?;
        let mut options = BTreeMap::new();
        loop {
            let key = self
                .string()
                .or_else(|| self.object_name())
                .ok_or("expected an option name")?;
            if matches!(self.peek(), Some(Token::Eq)) {
                self.pos += 1;
            }
            let value = self
                .string()
                .or_else(|| match self.peek() {
                    Some(Token::Number(n, _)) => {
                        let n = n.clone();
                        self.pos += 1;
                        Some(n)
                    }
                    _ => self.word(),
                })
                .ok_or_else(|| format!("expected a value for option '{key}'"))?;
            options.insert(key, value);
            match self.peek() {
                Some(Token::Comma) => self.pos += 1,
                Some(Token::RParen) => {
                    self.pos += 1;
                    return Ok(options);
                }
                _ => return Err("expected , or ) in OPTIONS".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_hive_and_datafusion_forms_parse() {
        let spark = parse_ctas(
            "CREATE TABLE IF NOT EXISTS db.sales USING parquet PARTITIONED BY (region, day)\n LOCATION 's3://b/sales/'\nAS\n  SELECT * FROM raw;",
        )
        .unwrap()
        .unwrap();
        assert_eq!(spark.name, "db.sales");
        assert!(spark.if_not_exists);
        assert_eq!(spark.partition_by, vec!["region", "day"]);
        assert_eq!(spark.location.as_deref(), Some("s3://b/sales/"));
        assert_eq!(spark.query, "SELECT * FROM raw");

        let hive = parse_ctas(
            "create table t partitioned by (d string) stored as csv location '/tmp/t/' options ('format.delimiter' '|') as with x as (select 1) select * from x",
        )
        .unwrap()
        .unwrap();
        assert_eq!(hive.format, TableFormat::Csv);
        assert_eq!(hive.partition_by, vec!["d"]);
        assert_eq!(hive.options["format.delimiter"], "|");
        assert_eq!(hive.query, "with x as (select 1) select * from x");

        let df = parse_ctas("CREATE EXTERNAL TABLE t STORED AS JSON LOCATION 'x/' AS (SELECT 1)")
            .unwrap()
            .unwrap();
        assert_eq!(df.format, TableFormat::Json);
        assert_eq!(df.query, "(SELECT 1)");
    }

    #[test]
    fn other_statements_are_left_alone() {
        for sql in [
            "SELECT 1",
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://b/t/'",
            "CREATE EXTERNAL TABLE t STORED AS ARROW LOCATION 's3://b/t/'",
            "CREATE EXTERNAL TABLE t STORED AS AVRO LOCATION 's3://b/t/'",
            "CREATE TABLE t (a INT)",
            "CREATE VIEW v AS SELECT 1",
        ] {
            assert_eq!(parse_ctas(sql), Ok(None), "{sql}");
        }
    }

    #[test]
    fn ctas_without_location_goes_to_the_warehouse() {
        let plain = parse_ctas("CREATE TABLE t AS SELECT 1").unwrap().unwrap();
        assert_eq!(plain.format, TableFormat::Parquet);
        assert_eq!(plain.location, None);
        assert_eq!(plain.location_in(Some("/w/")).unwrap(), "/w/t/");
        let err = plain.location_in(None).unwrap_err();
        assert!(
            err.contains("LOCATION") && err.contains("quiver.warehouse_dir"),
            "{err}"
        );
        let quoted = parse_ctas("CREATE TABLE \"Mixed\" USING csv AS SELECT 1")
            .unwrap()
            .unwrap();
        assert_eq!(quoted.location_in(Some("s3://b/w")).unwrap(), "s3://b/w/Mixed/");
        let located = parse_ctas("CREATE TABLE t LOCATION 's3://b/t/' AS SELECT 1")
            .unwrap()
            .unwrap();
        assert_eq!(located.location_in(None).unwrap(), "s3://b/t/");
    }

    #[test]
    fn ctas_with_unknown_format_is_refused() {
        let err = parse_ctas("CREATE TABLE t USING orc LOCATION 'x' AS SELECT 1").unwrap_err();
        assert!(err.contains("orc"), "{err}");
    }
}
