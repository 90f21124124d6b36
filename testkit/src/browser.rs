//! A real browser for the web app's tests: headless Chromium driven over
//! WebDriver by chromedriver, both from Debian (`chromium`,
//! `chromium-driver`; `scripts/tools.sh` installs them). The driver is found
//! at `CHROMEDRIVER` or on `PATH`; a test that cannot find it fails.
//!
//! Only the WebDriver commands the tests use, spoken as JSON over HTTP
//! (W3C WebDriver, plus chromedriver's `se/log` for the console).

use std::{
    net::TcpListener,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::child::{Proc, program};

/// How long one step of a test may wait for the page.
const STEP: Duration = Duration::from_secs(10);

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Keys as WebDriver spells them.
pub mod keys {
    /// Tab.
    pub const TAB: &str = "\u{e004}";
    /// Enter.
    pub const ENTER: &str = "\u{e007}";
}

/// chromedriver's program: `CHROMEDRIVER`, else `chromedriver` on `PATH`.
pub fn chromedriver() -> PathBuf {
    program(
        "CHROMEDRIVER",
        "chromedriver",
        "the browser tests need headless Chromium and its driver; `scripts/test.sh` installs \
         them (Debian packages chromium and chromium-driver)",
    )
}

/// One WebDriver session.
#[derive(Debug)]
struct Session {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    url: String,
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: a JSON answer: {err}"));
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// Headless Chromium with its driver; both stop when this is dropped.
#[derive(Debug)]
pub struct Browser {
    session: Arc<Session>,
    _driver: Proc,
    _dir: tempfile::TempDir,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element {
    session: Arc<Session>,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a 1280×900 window.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        // The driver's and Chromium's scratch files (the profile, its
        // singleton socket) go under `dir`, removed when the browser is
        // dropped: nothing is left in /tmp, however the test ends.
        let scratch = dir.path().join("tmp");
        std::fs::create_dir(&scratch).expect("a scratch directory");
        let driver = Proc::spawn(
            "chromedriver",
            &chromedriver(),
            &[&format!("--port={port}")],
            dir.path(),
            &[("TMPDIR".to_owned(), scratch.display().to_string())],
        );
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer within 20 s:\n{}",
                driver.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--disable-extensions", "--no-first-run"],
        });
        if let Some(binary) = std::env::var_os("CHROME_BIN").filter(|p| !p.is_empty()) {
            options["binary"] = json!(binary.to_string_lossy());
        }
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": options,
                "goog:loggingPrefs": {"browser": "ALL"},
            }}}))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}\n{}", driver.output()))
            .to_owned();
        Self {
            session: Arc::new(Session {
                http,
                url: format!("{base}/session/{id}"),
            }),
            _driver: driver,
            _dir: dir,
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.session.post("/url", json!({"url": url})).await;
    }

    /// The window's inner size, in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.session
            .post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.session
            .post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// The elements matching a CSS selector, now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .session
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .map(|element| self.element(element))
            .collect()
    }

    /// The first element matching a CSS selector, waiting up to 10 s for
    /// one that is displayed.
    pub async fn find(&self, css: &str) -> Element {
        let what = format!("a displayed element matching `{css}`");
        crate::eventually(STEP, &what, || async {
            for element in self.find_all(css).await {
                if element.is_displayed().await {
                    return Ok(element);
                }
            }
            Err(format!("none; the page says:\n{}", self.text("body").await))
        })
        .await
    }

    /// The rendered text of the first element matching `css` ("" when
    /// none does), read in one step (a page re-rendering meanwhile cannot
    /// leave a stale element).
    pub async fn text(&self, css: &str) -> String {
        self.texts(css).await.into_iter().next().unwrap_or_default()
    }

    /// The rendered text of every element matching `css`, in one step.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let texts = self
            .execute(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);",
                json!([css]),
            )
            .await;
        texts
            .as_array()
            .into_iter()
            .flatten()
            .map(|text| text.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits up to 10 s for the text of `css` to contain `wanted`.
    pub async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let what = format!("`{css}` saying {wanted:?}");
        crate::eventually(STEP, &what, || async {
            let text = self.text(css).await;
            if text.contains(wanted) {
                Ok(text)
            } else {
                Err(format!(
                    "{text:?}; the page says:\n{}",
                    self.text("body").await
                ))
            }
        })
        .await
    }

    /// The element that has the keyboard focus.
    pub async fn focused(&self) -> Element {
        let element = self.session.get("/element/active").await;
        self.element(&element)
    }

    /// Types `keys` into whatever has the focus, as a keyboard would.
    pub async fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|key| {
                [
                    json!({"type": "keyDown", "value": key.to_string()}),
                    json!({"type": "keyUp", "value": key.to_string()}),
                ]
            })
            .collect();
        self.session
            .post(
                "/actions",
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
            )
            .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.session.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 string"))
            .expect("a base64 PNG")
    }

    /// What the page wrote to the console since the last call, at level
    /// `WARNING` or above, with CSP violations and script errors among them.
    pub async fn console_problems(&self) -> Vec<String> {
        let entries = self
            .session
            .post("/se/log", json!({"type": "browser"}))
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| matches!(entry["level"].as_str(), Some("SEVERE" | "WARNING")))
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn element(&self, value: &Value) -> Element {
        Element {
            session: self.session.clone(),
            id: value[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("not an element: {value}"))
                .to_owned(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends Chromium; the driver is killed after.
        let url = self.session.url.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    let _ = reqwest::Client::new().delete(url).send().await;
                });
            }
        })
        .join();
    }
}

impl Element {
    /// Clicks it.
    pub async fn click(&self) {
        self.session
            .post(&format!("/element/{}/click", self.id), json!({}))
            .await;
    }

    /// Empties a field.
    pub async fn clear(&self) {
        self.session
            .post(&format!("/element/{}/clear", self.id), json!({}))
            .await;
    }

    /// Types `text` into it.
    pub async fn type_text(&self, text: &str) {
        self.session
            .post(
                &format!("/element/{}/value", self.id),
                json!({"text": text}),
            )
            .await;
    }

    /// Its rendered text.
    pub async fn text(&self) -> String {
        let text = self
            .session
            .get(&format!("/element/{}/text", self.id))
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// A DOM property (`value`, `id`, `disabled`…).
    pub async fn property(&self, name: &str) -> Value {
        self.session
            .get(&format!("/element/{}/property/{name}", self.id))
            .await
    }

    /// Whether it is displayed.
    pub async fn is_displayed(&self) -> bool {
        self.session
            .get(&format!("/element/{}/displayed", self.id))
            .await
            .as_bool()
            .unwrap_or(false)
    }
}
