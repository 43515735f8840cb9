//! Headless Chromium driven through a `chromedriver` child process, and the few page
//! operations the dashboard tests need, each waiting with a deadline instead of sleeping.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long a page may take to show what a test waits for. Polling is every 2 s, so
/// this leaves room for several refreshes on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// The paths of `chromium` and `chromedriver` when both are installed. Without them the
/// test is skipped loudly, or fails when `STEVEDORE_REQUIRE_BROWSER=1` (CI).
pub(super) fn browser_available(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program(&["chromedriver"]);
    if let (Some(c), Some(d)) = (chromium.clone(), driver.clone()) {
        return Some((c, d));
    }
    let missing = match (chromium, driver) {
        (None, None) => "chromium and chromedriver are",
        (None, Some(_)) => "chromium is",
        _ => "chromedriver is",
    };
    assert!(
        std::env::var("STEVEDORE_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "STEVEDORE_REQUIRE_BROWSER=1 but {missing} not on PATH \
         (Debian: apt-get install chromium chromium-driver)"
    );
    // Straight to stderr, past the test harness' capture, so the skip is seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n==================== SKIPPED {test} ====================\n\
         {missing} not on PATH (Debian: apt-get install chromium chromium-driver); \
         set STEVEDORE_REQUIRE_BROWSER=1 to make this a failure\n"
    );
    None
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A `chromedriver` child process on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session with a fresh profile, and the page helpers.
pub(super) struct Browser {
    client: Option<Client>,
    // Dropped after the session is closed: the driver first, then the profile dir.
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(super) async fn start(chromium: PathBuf, chromedriver: PathBuf) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("port").port()
        };
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, port };
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    // Without these Chromium tries to reach Google's servers, and on a
                    // closed network it stalls or fails.
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--window-size=1280,1000",
                    "--lang=en-US",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        let url = format!("http://127.0.0.1:{}", driver.port);
        let deadline = Instant::now() + WAIT;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no browser session from chromedriver after {WAIT:?}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client: Some(client),
            _driver: driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// Ends the session (the driver and the profile go on drop).
    pub(super) async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }

    /// Opens the dashboard at `url` and checks that its script runs: the page's
    /// Content-Security-Policy runs it only while the hash it names is the script's.
    pub(super) async fn open(&self, url: &str) {
        self.client().goto(url).await.expect("open the page");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .text("#token-state")
            .await
            .unwrap_or_default()
            .is_empty()
        {
            if Instant::now() > deadline {
                let hash = self
                    .client()
                    .execute_async(
                        "const done = arguments[arguments.length - 1]; \
                         const text = document.querySelector('script').textContent; \
                         crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)) \
                           .then(h => done(btoa(String.fromCharCode(...new Uint8Array(h)))));",
                        vec![],
                    )
                    .await
                    .ok();
                panic!(
                    "the dashboard's script did not run. If it was edited, put its new hash in \
                     the Content-Security-Policy of assets/dashboard.html: \
                     script-src 'sha256-{}'",
                    hash.as_ref().and_then(Value::as_str).unwrap_or("?")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `body` (a function body using `arguments`) in the page; returns its value.
    pub(super) async fn js(&self, body: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(body, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// The text of the first element matching `css`, `None` while there is none.
    pub(super) async fn text(&self, css: &str) -> Option<String> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await;
        v.as_str().map(str::to_string)
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    pub(super) async fn wait_text(
        &self,
        css: &str,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css).await;
            if let Some(t) = t.as_deref().filter(|t| ok(t)) {
                return t.to_string();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {WAIT:?} waiting for {what} ({css}); its text: {t:?}; \
                     page status: {:?}",
                    self.text("#conn").await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the number shown by `css` satisfies `ok`; returns it.
    pub(super) async fn wait_number(&self, css: &str, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
        let t = self
            .wait_text(css, what, |t| number(t).is_some_and(&ok))
            .await;
        number(&t).expect("a number")
    }

    /// Waits until an element matches `css`.
    pub(super) async fn wait_for(&self, css: &str, what: &str) {
        self.wait_text(css, what, |_| true).await;
    }

    /// Clicks the element matching `css` like a person would, once it is there and
    /// clickable (rows are refreshed every 2 s, so a lookup can race one refresh).
    pub(super) async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            // Centered, so neither the sticky header nor a message at the bottom covers it.
            self.js(
                "const e = document.querySelector(arguments[0]); \
                 if (e) e.scrollIntoView({block: 'center'});",
                vec![json!(css)],
            )
            .await;
            let result = match self.client().find(Locator::Css(css)).await {
                Ok(e) => e.click().await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("cannot click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The element matching `css`, once it is there (at most [`WAIT`]).
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Replaces the value of the input matching `css` by typing `text`.
    pub(super) async fn fill(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Chooses `value` in the select matching `css`.
    pub(super) async fn select(&self, css: &str, value: &str) {
        let e = self.element(css).await;
        e.select_by_value(value).await.expect("select");
    }

    /// Sizes the window to the whole page and writes a PNG of it to `path`.
    pub(super) async fn screenshot(&self, path: &std::path::Path) {
        let height = self
            .js("return document.documentElement.scrollHeight;", vec![])
            .await
            .as_u64()
            .unwrap_or(1000);
        let c = self.client();
        c.set_window_size(1280, height as u32 + 100)
            .await
            .expect("resize");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

/// The number in a text like "1,234" or "12".
pub(super) fn number(text: &str) -> Option<u64> {
    let digits: String = text.chars().filter(|c| *c != ',').collect();
    digits.trim().parse().ok()
}
