//! `quiver config keys`: every setting Quiver adds, with its default and what
//! it does, printed from the tables the settings are declared in.

use std::process::ExitCode;

use clap::Subcommand;
use comfy_table::{ContentArrangement, Table, presets::ASCII_MARKDOWN};
use quiver_core::options::{KeyDoc, QuiverOptions};
use quiver_core::session::ENGINE_DEFAULTS;
use quiver_core::storage::S3Settings;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The `quiver.*` and `s3.*` settings, and the engine settings whose
    /// default Quiver changes (`SET key = value`, `--conf key=value`, REST
    /// `conf`, or the config file).
    Keys {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Keys { json } = command;
    let mut keys: Vec<KeyDoc> = QuiverOptions::keys();
    keys.extend(S3Settings::keys());
    keys.extend(ENGINE_DEFAULTS.iter().map(|(key, value)| KeyDoc {
        key: (*key).to_owned(),
        doc: "an engine setting whose default Quiver changes (see ARCHITECTURE.md)",
        default: Some((*value).to_owned()),
    }));
    if json {
        let rows: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| serde_json::json!({"key": k.key, "default": k.default, "doc": k.doc}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let mut table = Table::new();
        table
            .load_preset(ASCII_MARKDOWN)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(["key", "default", "what it does"]);
        for k in &keys {
            table.add_row([k.key.as_str(), k.default.as_deref().unwrap_or("(unset)"), k.doc]);
        }
        println!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}
