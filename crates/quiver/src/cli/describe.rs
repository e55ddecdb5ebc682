//! `\d` and `\d NAME`: what the shell's session knows about its tables.
//!
//! Read from the session's catalog here, without running anything on the
//! cluster. Table options are never shown: they may hold credentials.

use comfy_table::{Table, presets::ASCII_MARKDOWN};
use datafusion::datasource::listing::ListingTable;
use datafusion::logical_expr::TableType;
use datafusion::prelude::SessionContext;
use quiver_core::secret;

fn table_kind(t: TableType) -> &'static str {
    match t {
        TableType::Base => "table",
        TableType::View => "view",
        TableType::Temporary => "temporary",
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    t.set_header(header.iter().copied());
    t
}

/// Lists the session's tables and views (information_schema left out).
pub async fn list_tables(ctx: &SessionContext) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for name in schema.table_names() {
                let Ok(Some(provider)) = schema.table(&name).await else {
                    continue;
                };
                let (format, location) = match provider.downcast_ref::<ListingTable>() {
                    Some(l) => (
                        l.options()
                            .format
                            .get_ext()
                            .trim_start_matches('.')
                            .to_ascii_uppercase(),
                        l.table_paths()
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    None => (String::new(), String::new()),
                };
                let qualified = if schema_name == "public" {
                    name.clone()
                } else {
                    format!("{schema_name}.{name}")
                };
                rows.push([qualified, table_kind(provider.table_type()).into(), format, location]);
            }
        }
    }
    if rows.is_empty() {
        return Ok(
            "No tables. Create one with CREATE EXTERNAL TABLE name STORED AS PARQUET LOCATION 's3://bucket/path/';\n"
                .into(),
        );
    }
    rows.sort();
    let mut t = new_table(&["name", "type", "format", "location"]);
    for r in rows {
        t.add_row(r);
    }
    Ok(format!("{t}\n"))
}

/// Describes one table: columns, then format, location and partitioning.
pub async fn describe_table(ctx: &SessionContext, name: &str) -> anyhow::Result<String> {
    let name = name.trim().trim_end_matches(';');
    let provider = ctx
        .table_provider(name)
        .await
        .map_err(|_| anyhow::anyhow!("no table or view named '{name}'; \\d lists them"))?;
    let schema = provider.schema();
    let listing = provider.downcast_ref::<ListingTable>();
    let partition_cols: Vec<String> = listing
        .map(|l| {
            l.options()
                .table_partition_cols
                .iter()
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut t = new_table(&["column", "type", "nullable"]);
    for f in schema.fields() {
        let mut ty = f.data_type().to_string();
        if partition_cols.contains(f.name()) {
            ty.push_str(" (partition)");
        }
        t.add_row([
            f.name().clone(),
            ty,
            if f.is_nullable() { "YES".into() } else { "NO".into() },
        ]);
    }
    let mut out = format!("{} {name}\n{t}\n", table_kind(provider.table_type()));
    if let Some(l) = listing {
        let paths: Vec<String> = l.table_paths().iter().map(|p| p.to_string()).collect();
        out.push_str(&format!(
            "format: {}\nlocation: {}\n",
            l.options()
                .format
                .get_ext()
                .trim_start_matches('.')
                .to_ascii_uppercase(),
            paths.join(", ")
        ));
        if !partition_cols.is_empty() {
            out.push_str(&format!("partitioned by: {}\n", partition_cols.join(", ")));
        }
    }
    if let Some(definition) = provider.get_table_definition() {
        out.push_str(&format!("definition: {}\n", secret::redact(definition)));
    }
    Ok(secret::redact(&out).into_owned())
}
