//! A headless Chromium driven over WebDriver (chromedriver), for UI tests.
//!
//! Only what the tests need: open a page, read its text, fill and submit a
//! form, take a screenshot, and read the browser console. Screenshots go to
//! `$CARGO_TARGET_DIR/test-artifacts/ui/` (or `target/…`) and are kept.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{Proc, free_port, wait_for, which};

pub struct Browser {
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _driver: Proc,
    _dir: tempfile::TempDir,
}

/// Where screenshots are kept.
pub fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artifacts/ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    pub fn start() -> Browser {
        let chromium = which("chromium").unwrap_or_else(|| {
            panic!("chromium is not installed: apt-get install chromium chromium-driver (scripts/test does)")
        });
        let driver = which("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is not installed: apt-get install chromium-driver (scripts/test does)")
        });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let proc = Proc::spawn(
            "chromedriver",
            Command::new(driver).arg(format!("--port={port}")),
            dir.path(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        wait_for("chromedriver", Duration::from_secs(20), || {
            http.get(format!("{base}/status"))
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
        let profile = dir.path().join("profile");
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.to_str().unwrap(),
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--disable-dev-shm-usage", "--window-size=1400,1000",
                             format!("--user-data-dir={}", profile.display())]
                },
                "goog:loggingPrefs": { "browser": "ALL" }
            }}
        });
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {r}"))
            .to_owned();
        Browser {
            base,
            session,
            http,
            _driver: proc,
            _dir: dir,
        }
    }

    fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut r = self.http.request(method, &url);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let v: Value = r.send().unwrap().json().unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// The page's visible text.
    pub fn text(&self) -> String {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": "return document.body.innerText", "args": [] })),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the page's visible text holds `needle` (a click that
    /// submits a form returns before the next page has loaded).
    pub fn wait_for_text(&self, needle: &str) {
        wait_for(&format!("the page to show {needle:?}"), Duration::from_secs(15), || {
            self.text().contains(needle)
        });
    }

    /// Waits until the page's address ends with `suffix`.
    pub fn wait_for_url(&self, suffix: &str) {
        wait_for(
            &format!("the address to end with {suffix:?}"),
            Duration::from_secs(15),
            || self.url().ends_with(suffix),
        );
    }

    /// Runs a script in the page.
    pub fn execute(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The page's text with every collapsed `<details>` opened first.
    pub fn text_content(&self) -> String {
        self.execute("document.querySelectorAll('details').forEach(function (d) { d.open = true; })");
        self.text()
    }

    pub fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn count(&self, css: &str) -> usize {
        self.cmd(
            reqwest::Method::POST,
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            reqwest::Method::POST,
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Saves a screenshot as `<name>.png` among the test artifacts.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.cmd(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Console messages logged as errors (or worse) since the last call.
    pub fn console_errors(&self) -> Vec<String> {
        let v = self.cmd(reqwest::Method::POST, "/se/log", Some(json!({ "type": "browser" })));
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| matches!(e["level"].as_str(), Some("SEVERE") | Some("ERROR")))
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
    }
}
