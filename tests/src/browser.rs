//! Headless Chromium over WebDriver, for the tests of the web console in a real browser.
//!
//! [`Browser::start`] finds `chromium` and `chromedriver` on `PATH` (Debian's `chromium` and
//! `chromium-driver` packages; `FLAGSTAFF_CHROMIUM` and `FLAGSTAFF_CHROMEDRIVER` name other
//! binaries), starts chromedriver on a free loopback port, and opens a headless Chromium with
//! a profile of its own in a temporary directory. Each test gets its own chromedriver and
//! browser; at most [`AT_ONCE`] run at a time, the others wait for their turn. Dropping the
//! [`Browser`] closes the browser and ends chromedriver.
//!
//! The client is the W3C WebDriver protocol itself, JSON over HTTP with the `reqwest` client
//! the tests already have: the few commands below are all the console's tests need.
//!
//! # Without a browser
//!
//! Without the binaries, [`Browser::start`] returns `None`, after one line on stderr (once per
//! test process) saying that the browser tests were skipped and why, and the test returns.
//! With `FLAGSTAFF_REQUIRE_BROWSER=1` (as CI runs), missing binaries fail the test instead.
//!
//! # Screenshots
//!
//! [`Browser::screenshot`] saves PNGs under `<target dir>/console-screenshots/<test>/`, named
//! `NN-<page>.png` in the order taken, so that a reviewer can look at what each test saw. A
//! test's directory is emptied when its browser starts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

/// When set (to anything but `0`), a missing browser fails the browser tests instead of
/// skipping them. CI sets it.
pub const REQUIRE_ENV: &str = "FLAGSTAFF_REQUIRE_BROWSER";

/// The Chromium binary to run, instead of `chromium` on `PATH`.
pub const CHROMIUM_ENV: &str = "FLAGSTAFF_CHROMIUM";

/// The chromedriver binary to run, instead of `chromedriver` on `PATH`.
pub const CHROMEDRIVER_ENV: &str = "FLAGSTAFF_CHROMEDRIVER";

/// How many browsers run at once in a test process: each is a few processes and a few hundred
/// megabytes, and the machines that run the tests have two cores.
pub const AT_ONCE: usize = 2;

/// The turns to run a browser: a test holds one from [`Browser::start`] until its browser is
/// dropped.
static TURNS: Semaphore = Semaphore::const_new(AT_ONCE);

/// The skip line is printed once per test process.
static SKIPPED: Once = Once::new();

/// How long one WebDriver command may take (a page load included) before the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// How long chromedriver may take to start listening.
const DRIVER_START: Duration = Duration::from_secs(20);

/// Key codes for [`Browser::press`], as WebDriver names them.
pub mod keys {
    /// The Tab key.
    pub const TAB: &str = "\u{E004}";
    /// The Enter key.
    pub const ENTER: &str = "\u{E007}";
}

/// The W3C name of the field holding an element's reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium driven over WebDriver; closed when dropped.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`: where this browser's commands go.
    session: String,
    /// chromedriver's address, for the blocking close on drop.
    driver_addr: SocketAddr,
    session_id: String,
    /// Chromium's process id as chromedriver reports it, to end it should chromedriver not.
    browser_pid: Option<u64>,
    driver: Child,
    /// Never held across an await.
    screenshots: Mutex<Screenshots>,
    /// The browser's profile (`--user-data-dir`); removed after the browser is closed.
    _profile: tempfile::TempDir,
    _turn: SemaphorePermit<'static>,
}

/// An element of the page shown, as WebDriver refers to it.
#[derive(Debug, Clone)]
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

/// Where a test's screenshots go, and the number of the next.
#[derive(Debug)]
struct Screenshots {
    dir: PathBuf,
    taken: usize,
}

fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|value| !value.is_empty() && value != "0")
}

/// The binary `env` names, or the first of `names` on `PATH`; else why there is none.
fn binary(env: &str, names: &[&str]) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env} names {}, which is no file", path.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| format!("no {} on PATH", names[0]))
}

/// The test's name, as the test harness names each test's thread, without its module path.
fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("a-test");
    name.rsplit("::").next().unwrap_or(name).to_owned()
}

/// The target directory: `CARGO_TARGET_DIR` when absolute, else the one holding this test
/// executable (`<target>/debug/deps/<test>`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            return dir;
        }
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Browser {
    /// A headless Chromium for the calling test; `None` when there is none and
    /// [`REQUIRE_ENV`] is not set (one line on stderr said so).
    ///
    /// # Panics
    ///
    /// When the binaries are missing and [`REQUIRE_ENV`] is set, or when they are there but
    /// chromedriver or the browser does not start.
    pub async fn start() -> Option<Browser> {
        let chromium = binary(CHROMIUM_ENV, &["chromium", "chromium-browser"]);
        let chromedriver = binary(CHROMEDRIVER_ENV, &["chromedriver"]);
        let (chromium, chromedriver) = match (chromium, chromedriver) {
            (Ok(chromium), Ok(chromedriver)) => (chromium, chromedriver),
            (chromium, chromedriver) => {
                let why = [chromium.err(), chromedriver.err()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ");
                assert!(
                    !required(),
                    "{REQUIRE_ENV} is set, and there is no browser: {why} (install Debian's \
                     chromium and chromium-driver, or name the binaries with {CHROMIUM_ENV} \
                     and {CHROMEDRIVER_ENV})"
                );
                SKIPPED.call_once(|| {
                    // Straight to stderr: the test harness captures what `eprintln!` prints.
                    let _ = writeln!(
                        std::io::stderr(),
                        "console browser tests skipped: {why} (install Debian's chromium and \
                         chromium-driver, or set {REQUIRE_ENV}=1 to make this a failure)"
                    );
                });
                return None;
            }
        };
        let turn = TURNS.acquire().await.expect("the turns are never closed");
        let screenshots = Screenshots::new(&test_name());
        Some(Browser::open(&chromium, &chromedriver, screenshots, turn).await)
    }

    async fn open(
        chromium: &Path,
        chromedriver: &Path,
        screenshots: Screenshots,
        turn: SemaphorePermit<'static>,
    ) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let port = free_port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display()));
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(COMMAND_LIMIT)
            .build()
            .expect("an HTTP client");
        let base = format!("http://{driver_addr}");
        let deadline = Instant::now() + DRIVER_START;
        loop {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(answer) => answer
                    .json::<Value>()
                    .await
                    .is_ok_and(|status| status["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                panic!("chromedriver did not start listening within {DRIVER_START:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // As root (CI), Chromium's sandbox cannot start.
                    "--no-sandbox",
                    // Containers give /dev/shm a few megabytes.
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1280,900",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-sync",
                    "--password-store=basic",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
            },
        }}});
        let answer = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await;
        let value = match answer {
            Ok(answer) => answer.json::<Value>().await.unwrap_or(Value::Null),
            Err(e) => json!({"value": {"error": e.to_string()}}),
        };
        let Some(session_id) = value["value"]["sessionId"].as_str().map(str::to_owned) else {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!(
                "chromedriver did not open {}: {}",
                chromium.display(),
                value["value"]
            );
        };
        Browser {
            browser_pid: value["value"]["capabilities"]["goog:processID"].as_u64(),
            session: format!("{base}/session/{session_id}"),
            session_id,
            driver_addr,
            http,
            driver,
            screenshots: Mutex::new(screenshots),
            _profile: profile,
            _turn: turn,
        }
    }

    /// Sends a command; its `value`. Panics with WebDriver's error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver command {path:?}: {e}"));
        let ok = answer.status().is_success();
        let mut value: Value = answer
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver command {path:?}: {e}"));
        let value = value["value"].take();
        assert!(ok, "WebDriver command {path:?} failed: {value}");
        value
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Loads the page again.
    pub async fn refresh(&self) {
        self.post("/refresh", json!({})).await;
    }

    /// The address of the page shown.
    pub async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The path and query of the page shown: `/envs/production/flags?page=2`.
    pub async fn path(&self) -> String {
        let url = self.url().await;
        let url = reqwest::Url::parse(&url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the page shown is at `path` (with its query), as after a key press that
    /// follows a link or sends a form; panics after a while, naming where the browser is.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            let now = self.path().await;
            if now == path {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the browser never reached {path}: it shows {now}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        self.get("/title")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The HTTP status the page shown was answered with.
    pub async fn status(&self) -> u16 {
        let status = self
            .execute(
                "return performance.getEntriesByType('navigation')[0].responseStatus",
                json!([]),
            )
            .await;
        status
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("no status for the page shown: {status}"))
    }

    /// Runs `script` in the page with `args` (WebDriver runs it whatever the page's
    /// Content-Security-Policy says); what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// The elements matching the CSS `selector`, in document order.
    pub async fn find_all(&self, selector: &str) -> Vec<Element<'_>> {
        let found = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": selector }),
            )
            .await;
        found
            .as_array()
            .map(|elements| elements.iter().map(|e| self.element(e)).collect())
            .unwrap_or_default()
    }

    /// The first element matching the CSS `selector`; panics when there is none.
    pub async fn find(&self, selector: &str) -> Element<'_> {
        match self.find_all(selector).await.into_iter().next() {
            Some(element) => element,
            None => panic!("no {selector:?} on {}", self.url().await),
        }
    }

    /// The text of every element matching `selector`, as shown.
    pub async fn texts(&self, selector: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.find_all(selector).await {
            texts.push(element.text().await);
        }
        texts
    }

    /// The text of the first element matching `selector`, as shown.
    pub async fn text(&self, selector: &str) -> String {
        self.find(selector).await.text().await
    }

    /// The element that has the focus (the body when none has).
    pub async fn active(&self) -> Element<'_> {
        let found = self.get("/element/active").await;
        self.element(&found)
    }

    fn element(&self, reference: &Value) -> Element<'_> {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element: {reference}"));
        Element {
            browser: self,
            id: id.to_owned(),
        }
    }

    /// Presses `keys` one after the other on whatever has the focus, as a person at the
    /// keyboard does: characters, or [`keys`] such as [`keys::TAB`].
    pub async fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|key| {
                let key = key.to_string();
                [
                    json!({"type": "keyDown", "value": key}),
                    json!({"type": "keyUp", "value": key}),
                ]
            })
            .collect();
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await;
        self.command(reqwest::Method::DELETE, "/actions", None)
            .await;
    }

    /// The value of the cookie `name` of the page shown's site (`HttpOnly` ones too).
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let cookies = self.get("/cookie").await;
        cookies.as_array()?.iter().find_map(|cookie| {
            (cookie["name"] == name).then(|| cookie["value"].as_str().unwrap_or("").to_owned())
        })
    }

    /// Saves a screenshot of the page shown as `NN-<page>.png` in the test's directory; its
    /// path.
    pub async fn screenshot(&self, page: &str) -> PathBuf {
        let encoded = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        self.screenshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .save(page, &png)
    }

    /// Ends the WebDriver session, which closes the browser, without the async runtime (from
    /// `drop`): true if chromedriver said it did.
    fn close(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.driver_addr, Duration::from_secs(5))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: \
             close\r\n\r\n",
            self.session_id, self.driver_addr
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        // chromedriver answers once the browser has quit, and may keep the connection open
        // after: the status line is all there is to wait for.
        let mut answer = Vec::new();
        let mut chunk = [0; 512];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
        answer.starts_with(b"HTTP/1.1 200")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.close() {
            // chromedriver leaves the browser running when it is killed: end it by its id.
            if let Some(pid) = self.browser_pid {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Element<'_> {
    fn path(&self, what: &str) -> String {
        format!("/element/{}/{what}", self.id)
    }

    /// The element's text, as shown.
    pub async fn text(&self) -> String {
        let text = self.browser.get(&self.path("text")).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The element's tag name, in lower case.
    pub async fn tag(&self) -> String {
        let name = self.browser.get(&self.path("name")).await;
        name.as_str().unwrap_or_default().to_lowercase()
    }

    /// The element's attribute `name`, if it has one.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        let value = self
            .browser
            .get(&self.path(&format!("attribute/{name}")))
            .await;
        value.as_str().map(str::to_owned)
    }

    /// The element's DOM property `name` (an input's current `value`, say).
    pub async fn property(&self, name: &str) -> Value {
        self.browser
            .get(&self.path(&format!("property/{name}")))
            .await
    }

    /// Whether the element is inside the first element matching `selector`.
    pub async fn is_inside(&self, selector: &str) -> bool {
        let inside = self
            .browser
            .execute(
                "return arguments[0].closest(arguments[1]) !== null",
                json!([{ ELEMENT_KEY: self.id }, selector]),
            )
            .await;
        inside == true
    }

    /// Whether this and `other` are the same element.
    pub fn is(&self, other: &Element<'_>) -> bool {
        self.id == other.id
    }

    /// Clicks the element (and waits for a page it loads).
    pub async fn click(&self) {
        self.browser.post(&self.path("click"), json!({})).await;
    }

    /// Empties the element, a text field.
    pub async fn clear(&self) {
        self.browser.post(&self.path("clear"), json!({})).await;
    }

    /// Types `text` into the element, after giving it the focus.
    pub async fn type_text(&self, text: &str) {
        self.browser
            .post(&self.path("value"), json!({ "text": text }))
            .await;
    }
}

impl Screenshots {
    /// The (emptied) directory of the screenshots of `test`.
    fn new(test: &str) -> Screenshots {
        let dir = target_dir().join("console-screenshots").join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        Screenshots { dir, taken: 0 }
    }

    fn save(&mut self, page: &str, png: &[u8]) -> PathBuf {
        self.taken += 1;
        let name: String = page
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self.dir.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

/// A page of another origin, as an attacker's site would be: every request to it, whatever
/// its path, is answered with the same HTML. It stops when dropped.
#[derive(Debug)]
pub struct OtherSite {
    /// Where it listens, on loopback.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl OtherSite {
    /// Serves `html` on a fresh loopback port.
    pub async fn serve(html: String) -> OtherSite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let page = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: \
             {}\r\nConnection: close\r\n\r\n{html}",
            html.len()
        );
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let page = page.clone();
                tokio::spawn(async move {
                    // The request's head; what it asks for does not matter.
                    let mut head = vec![0; 8192];
                    let _ = stream.read(&mut head).await;
                    let _ = stream.write_all(page.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        OtherSite { addr, task }
    }

    /// The site's address: `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}
