//! The web console in a real browser: a real `nasvisord` (TCG, the bundled
//! guest image), headless Chromium driven through chromedriver (Debian's
//! `chromium` and `chromium-driver`, installed by `scripts/setup.sh`) with
//! the `fantoccini` WebDriver client.
//!
//! An admin logs in through the login page, creates a VM from the bundled
//! image in the page, watches it install and run, reads its serial console
//! in the page and types into it. A changing request made with the session
//! cookie but without the CSRF header is refused. A viewer then finds Stop
//! disabled and is refused by the server when calling it anyway; the
//! admin, back, presses Stop and sees the VM stopped. Every step is saved
//! as a PNG screenshot under `target/test-artifacts/web-console/` (or
//! `$NASVISOR_ARTIFACT_DIR`).
//!
//! chromedriver is started by the test on a free loopback port and stopped
//! by its own process group id (it and the browser it started) when the
//! test ends, failed or not.

mod common;

use common::{free_port, typed, Daemon};
use fantoccini::{Client, ClientBuilder, Locator};
use nasvisor_plugin_host::testkit::workspace_root;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Install, first boot and the guest's ready line, under TCG.
const BOOT: Duration = Duration::from_secs(150);

/// Where the screenshots go.
fn artifact_dir() -> PathBuf {
    let dir = std::env::var_os("NASVISOR_ARTIFACT_DIR")
        .map(|d| PathBuf::from(d).join("web-console"))
        .unwrap_or_else(|| workspace_root().join("target/test-artifacts/web-console"));
    std::fs::create_dir_all(&dir).expect("the artifact directory can be made");
    dir.canonicalize().unwrap_or(dir)
}

/// chromedriver, started on a loopback port in a process group of its own
/// (the browser it starts joins the group); the group is killed on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
    /// The browser's profile directory (also how its processes are told).
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    fn start(log: &Path) -> ChromeDriver {
        for (bin, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: the web console's browser test needs Debian's {package}; \
                 run scripts/setup.sh (it installs chromium and chromium-driver)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = ChromeDriver {
            child,
            port,
            profile: tempfile::tempdir().expect("tempdir"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}; its log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    /// A WebDriver session: headless Chromium that accepts the daemon's
    /// self-signed certificate (for this session only).
    async fn connect(&self) -> Client {
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session with headless Chromium")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid; it has not been reaped yet,
        // so the id cannot have been reused.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
        // A browser process that left the group: told by its profile
        // directory, killed by its pid.
        let profile = self.profile.path().to_string_lossy().into_owned();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&profile))
                .unwrap_or(false);
            if let (true, Some(pid)) = (ours, rustix::process::Pid::from_raw(pid)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The browser, the daemon it talks to, and where screenshots go.
struct Page<'a> {
    client: Client,
    daemon: &'a Daemon,
    dir: PathBuf,
    shots: u32,
    started: Instant,
}

impl Page<'_> {
    /// Saves a screenshot `NN-name.png`.
    async fn shot(&mut self, name: &str) {
        self.shots += 1;
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.dir.join(format!("{:02}-{name}.png", self.shots));
        std::fs::write(&path, png).expect("the screenshot is written");
        eprintln!(
            "[{:>5.1}s] screenshot {}",
            self.started.elapsed().as_secs_f64(),
            path.display()
        );
    }

    /// Runs `script` (a function body) in the page.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns a truthy value, which it returns. On
    /// timeout: a screenshot, the page's banner and text, the daemon's log.
    async fn until(&mut self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                self.fail(what).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the page has an element matching `css`.
    async fn until_present(&mut self, what: &str, css: &str) {
        let script = format!("return !!document.querySelector({css:?});");
        self.until(what, Duration::from_secs(15), &script).await;
    }

    /// Waits until the VM page shows the VM in `state`.
    async fn until_vm(&mut self, state: &str, timeout: Duration) {
        let script =
            format!("return document.querySelector('#vm-state')?.dataset.state === {state:?};");
        self.until(&format!("the VM {state}"), timeout, &script)
            .await;
    }

    async fn fail(&mut self, what: &str) -> ! {
        let name: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.shot(&format!("failed-{name}")).await;
        let text = self
            .js("return document.body.innerText.slice(-6000);")
            .await;
        let log = std::fs::read_to_string(self.daemon.log_path()).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "{what}: not seen in time.\npage:\n{}\nnasvisord's log (end):\n{tail}",
            text.as_str().unwrap_or_default()
        );
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} in the page: {e}"))
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("typing");
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click on {css}: {e}"));
    }

    async fn go(&self, hash: &str) {
        let url = format!("{}/{hash}", self.base());
        self.client.goto(&url).await.expect("navigation");
    }

    /// `https://127.0.0.1:PORT`, as the daemon's banner says.
    fn base(&self) -> String {
        self.daemon.endpoint.clone()
    }

    /// Logs in through the login page and waits for the user in the top bar.
    async fn log_in(&mut self, user: &str, password: &str, role: &str) {
        self.until_present("the login form", "#login-form").await;
        self.type_into("#login-user", user).await;
        self.type_into("#login-password", password).await;
        self.click("#login-submit").await;
        let want = format!("{user} ({role})");
        self.until(
            &format!("{user} logged in"),
            Duration::from_secs(15),
            &format!(
                "const w = document.querySelector('#whoami'); \
                 return !document.querySelector('#topbar').hidden && w && w.textContent === {want:?};"
            ),
        )
        .await;
    }

    async fn log_out(&mut self) {
        self.click("#logout").await;
        self.until_present("the login form after logout", "#login-form")
            .await;
    }

    /// `fetch` in the page with the session cookie: `{status, field}`.
    async fn fetch(&self, method: &str, path: &str, body: &Value, csrf: Option<&str>) -> Value {
        let csrf_header = match csrf {
            Some("whoami") => {
                "(await (await fetch('/api/v1/auth/whoami')).json()).csrf_token".into()
            }
            Some(t) => format!("{t:?}"),
            None => "null".into(),
        };
        let script = format!(
            "const done = arguments[arguments.length - 1];
             (async () => {{
               const headers = {{'Content-Type': 'application/json'}};
               const csrf = {csrf_header};
               if (csrf) headers['X-CSRF-Token'] = csrf;
               const r = await fetch({path:?}, {{method: {method:?}, headers,
                 body: JSON.stringify({body}), credentials: 'same-origin'}});
               let e = null;
               try {{ e = (await r.json()).error; }} catch (_) {{}}
               done({{status: r.status, field: e && e.field, reason: e && e.reason}});
             }})().catch((err) => done({{status: 0, reason: String(err)}}));"
        );
        self.client
            .execute_async(&script, Vec::new())
            .await
            .expect("the fetch script runs")
    }
}

/// Creates user `name` with `role` through the CLI (admin token).
fn create_user(d: &Daemon, name: &str, role: &str, password: &str) {
    let c = d.cli_command(
        &d.admin_token(),
        &["user", "create", name, "--role", role, "--password-stdin"],
    );
    let o = typed(c, &format!("{password}\n"));
    assert!(
        o.status.success(),
        "user create {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn an_admin_runs_a_vm_from_the_web_console_and_a_viewer_cannot_stop_it() {
    let dir = artifact_dir();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "png") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let driver = ChromeDriver::start(&dir.join("chromedriver.log"));
    let d = Daemon::start();
    create_user(&d, "ada", "admin", "ada's long password");
    create_user(&d, "vic", "viewer", "vic's long password");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = driver.connect().await;
        let mut p = Page {
            client,
            daemon: &d,
            dir,
            shots: 0,
            started: Instant::now(),
        };

        // The login page loads without a credential.
        p.go("").await;
        p.until_present("the login page", "#login-form").await;
        p.shot("login").await;
        // A wrong password is said so, in the page.
        p.type_into("#login-user", "ada").await;
        p.type_into("#login-password", "not the password").await;
        p.click("#login-submit").await;
        p.until(
            "the wrong-password message",
            Duration::from_secs(15),
            "const e = document.querySelector('#login-error'); return e && !e.hidden && e.textContent;",
        )
        .await;
        p.log_in("ada", "ada's long password", "admin").await;
        p.until(
            "the hosts table",
            Duration::from_secs(15),
            "return document.querySelector('#hosts-table tr[data-key=\"nas1\"]')?.textContent;",
        )
        .await;
        p.shot("overview").await;

        // Create a VM from the bundled image, with install settings.
        p.go("#/vms/new").await;
        p.until(
            "the create form with the bundled image",
            Duration::from_secs(15),
            "return document.querySelector('#vm-image')?.value === 'nasvisor-mini';",
        )
        .await;
        p.type_into("#vm-name", "web1").await;
        p.type_into("#vm-memory-mib", "256").await;
        p.type_into("#vm-hostname", "web-one").await;
        p.type_into("#vm-user", "admin").await;
        p.shot("create-form").await;
        p.click("#vm-create-submit").await;
        p.until(
            "the VM's page",
            Duration::from_secs(20),
            "return location.hash === '#/vms/web1' && document.querySelector('#vm-state')?.dataset.state;",
        )
        .await;
        p.shot("installing").await;

        // It installs and runs; the page shows it, and its console.
        p.until_vm("running", BOOT).await;
        let console = p
            .until(
                "the guest's ready line in the page's console",
                BOOT,
                "const t = document.querySelector('#console-output')?.textContent || ''; \
                 return t.includes('NASVISOR-READY') && t;",
            )
            .await;
        let console = console.as_str().unwrap_or_default();
        assert!(console.contains("NASVISOR-HOSTNAME=web-one"), "{console}");
        assert!(console.contains("NASVISOR-USER admin"), "{console}");
        assert_eq!(
            p.js("return document.querySelector('#console-status').dataset.state;")
                .await,
            "live"
        );
        // Typing in the page reaches the guest's shell.
        p.type_into("#console-input", "echo sum-$((40+2))").await;
        p.click("#console-send").await;
        p.until(
            "the guest's answer to typing in the page",
            Duration::from_secs(30),
            "return (document.querySelector('#console-output')?.textContent || '').includes('sum-42');",
        )
        .await;
        p.shot("running-console").await;
        p.js("window.scrollTo(0, 0); return true;").await;
        p.shot("running").await;

        // The session cookie without the CSRF header changes nothing.
        let r = p
            .fetch(
                "POST",
                "/api/v1/vms/web1/power",
                &json!({"op": "force_off"}),
                None,
            )
            .await;
        assert_eq!(r["status"], 403, "{r}");
        assert_eq!(r["field"], "x-csrf-token", "{r}");
        // After a reload the page has the session's CSRF token again (from
        // whoami): the admin's buttons still work.
        p.client.refresh().await.expect("reload");
        p.until_vm("running", Duration::from_secs(15)).await;
        let stop_enabled = p
            .js("return !document.querySelector('#vm-stop').disabled;")
            .await;
        assert_eq!(stop_enabled, true, "an admin may stop a running VM");

        // A viewer sees the running VM, but Stop is disabled for its role,
        // and the server refuses the call anyway.
        p.log_out().await;
        p.log_in("vic", "vic's long password", "viewer").await;
        p.go("#/vms/web1").await;
        p.until_vm("running", Duration::from_secs(15)).await;
        let stop = p
            .js("const b = document.querySelector('#vm-stop'); \
                 return b && {disabled: b.disabled, needs: b.dataset.needsRole || null};")
            .await;
        assert_eq!(stop, json!({"disabled": true, "needs": "operator"}), "{stop}");
        let buttons = p
            .js("return [...document.querySelectorAll('#vm-power button')].filter((b) => !b.disabled).length;")
            .await;
        assert_eq!(buttons, 0, "a viewer has no enabled power button");
        p.until(
            "the console closed to the viewer",
            Duration::from_secs(10),
            "return document.querySelector('#console-status')?.dataset.state === 'forbidden';",
        )
        .await;
        assert_eq!(
            p.js("return document.querySelector('#nav a[data-page=\"access\"]').hidden;")
                .await,
            true,
            "the users page is hidden from a viewer"
        );
        p.shot("viewer").await;
        let r = p
            .fetch(
                "POST",
                "/api/v1/vms/web1/power",
                &json!({"op": "shutdown"}),
                Some("whoami"),
            )
            .await;
        assert_eq!(r["status"], 403, "{r}");
        assert!(
            r["reason"].as_str().unwrap_or_default().contains("operator"),
            "{r}"
        );
        let vm = d.json(&["vm", "show", "web1"]);
        assert_eq!(vm["state"], "running", "{vm:#}");

        // The admin, back, presses Stop and sees the VM stopped.
        p.log_out().await;
        p.log_in("ada", "ada's long password", "admin").await;
        p.go("#/vms/web1").await;
        p.until(
            "Stop enabled for the admin",
            Duration::from_secs(15),
            "const b = document.querySelector('#vm-stop'); return b && !b.disabled;",
        )
        .await;
        p.click("#vm-stop").await;
        p.until_vm("stopped", Duration::from_secs(90)).await;
        p.shot("stopped").await;
        let vm = d.json(&["vm", "show", "web1"]);
        assert_eq!(vm["state"], "stopped", "{vm:#}");

        // The other pages draw from the API without an error or a CSP
        // violation.
        for (page, ready) in [
            ("#/images", "#images-table tr[data-key=\"nasvisor-mini\"]"),
            ("#/storage/default", "#volumes-table tr[data-key=\"web1-root\"]"),
            ("#/vswitches", "#vswitches-table"),
            ("#/plugins", "#plugins-table tr[data-key=\"scheduler\"]"),
            // The placement of web1, among the host's recent decisions.
            (
                "#/plugins",
                "#plugin-decisions-table tr[data-key$=\"/scheduler/place\"]",
            ),
            ("#/jobs", "#jobs-table"),
            ("#/events", "#events-table"),
            ("#/access", "#users-table tr[data-key=\"vic\"]"),
            ("#/account", "#tokens-table"),
        ] {
            p.go(page).await;
            p.until_present(&format!("page {page}"), ready).await;
            let flash = p
                .js("const f = document.querySelector('#flash'); return f.hidden ? null : f.textContent;")
                .await;
            assert_eq!(flash, Value::Null, "{page}: {flash}");
            p.shot(&page[2..].replace('/', "-")).await;
        }
        // An image uploaded from the browser (XMLHttpRequest, its progress
        // shown) is imported.
        let tiny = d.dir.path().join("tiny.qcow2");
        let o = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&tiny)
            .arg("16M")
            .output()
            .expect("qemu-img runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        p.go("#/images").await;
        p.until_present("the upload form", "#image-upload-form").await;
        p.find("#image-file")
            .await
            .send_keys(&tiny.to_string_lossy())
            .await
            .expect("a file chosen");
        assert_eq!(
            p.js("return document.querySelector('#image-upload-name').value;")
                .await,
            "tiny",
            "the name comes from the file's"
        );
        p.click("#image-upload-submit").await;
        p.until(
            "the uploaded image ready",
            Duration::from_secs(60),
            "return document.querySelector('#images-table tr[data-key=\"tiny\"] [data-state=\"ready\"]');",
        )
        .await;
        let sent = p
            .js("return document.querySelector('#image-upload-progress').value;")
            .await;
        assert_eq!(sent, 100, "the progress bar reached its end");
        p.shot("image-uploaded").await;
        let images = d.json(&["image", "list"]);
        let tiny = images.as_array().and_then(|l| l.iter().find(|i| i["name"] == "tiny"));
        assert_eq!(tiny.map(|i| &i["state"]), Some(&json!("ready")), "{images:#}");

        let violations = p
            .js("return document.body.dataset.cspViolations || null;")
            .await;
        assert_eq!(violations, Value::Null, "CSP violations: {violations}");
        eprintln!(
            "browser part took {:.1}s",
            p.started.elapsed().as_secs_f64()
        );
        p.client.close().await.expect("the browser closes");
    });
    drop(driver);
}
