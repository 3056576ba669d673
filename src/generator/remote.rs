//! The plugin as a client of `melodist serve` (the editor's *Model server* setting, off by
//! default): a [`Generator`] that asks the server for each phrase and, when the server is
//! off, slow, gone or wrong, writes the phrase with the local model instead.
//!
//! It runs on the worker thread, which already writes bars ahead of the playhead, so the
//! audio thread never sees the network: a late or failed call costs at most [`CALL_LIMIT`]
//! of the worker's lead, then the local model fills in. After a failure the server is left
//! alone for a while ([`FIRST_PAUSE`], doubling up to [`LONGEST_PAUSE`]) so a dead server
//! costs nothing per phrase; the next success resets that.
//!
//! The setting is kept per user in `model-server.json` in Melodist's data folder, not in
//! projects: a token never travels with a project the producer shares.

use super::{Generator, Phrase, PhraseRequest};
use crate::music::{BeatNote, SeedRng};
use crate::serve::api::{PhraseAnswer, PhraseCall};
use crate::serve::client::ServerClient;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one phrase may take from the server before the local model writes it. The
/// worker asks two bars ahead; this leaves the local model most of a bar even at 240 BPM.
pub const CALL_LIMIT: Duration = Duration::from_millis(250);
/// How long a failed server is left alone before it is asked again...
pub const FIRST_PAUSE: Duration = Duration::from_secs(2);
/// ...doubling with each further failure up to this.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// The file the setting lives in, inside [`crate::sessions::data_dir`].
pub const SETTING_FILE: &str = "model-server.json";

/// The *Model server* setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSetting {
    /// Off by default: everything works offline.
    pub enabled: bool,
    /// `http://host:port` of a `melodist serve`.
    pub url: String,
    /// The API token (`melodist serve token add NAME`); empty on a loopback server
    /// that requires none.
    pub token: String,
}

impl ServerSetting {
    pub fn path() -> anyhow::Result<PathBuf> {
        Ok(crate::sessions::data_dir()?.join(SETTING_FILE))
    }

    /// The saved setting; off (with the reason) when there is none or it cannot be read.
    pub fn load() -> (Self, Option<String>) {
        let read = || -> anyhow::Result<Option<Self>> {
            let path = Self::path()?;
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is not a Model server setting", path.display())
                })?)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        };
        match read() {
            Ok(setting) => (setting.unwrap_or_default(), None),
            Err(e) => (
                Self::default(),
                Some(format!("{e:#}; the model server is off")),
            ),
        }
    }

    /// Saves the setting at `path` ([`ServerSetting::path`] for every Melodist of this
    /// user), readable by this user only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().context("the data folder has no parent")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let temporary = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = options.open(&temporary)?;
            file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        write().with_context(|| format!("cannot save {}", path.display()))
    }
}

/// What the editor and the worker share: the setting (the editor changes it, the worker
/// reads it before each phrase) and what the worker last saw of the server.
#[derive(Debug, Default)]
pub struct ServerLink {
    setting: Mutex<ServerSetting>,
    /// Bumped by every change, so the worker rebuilds its client only then.
    changes: AtomicU64,
    /// One line for the editor: which server answers, or why the local model plays.
    report: Mutex<String>,
    /// Phrases the server wrote, and phrases the local model wrote while it was on.
    pub from_server: AtomicU64,
    pub fell_back: AtomicU64,
}

impl ServerLink {
    /// The saved setting (see [`ServerSetting::load`]).
    pub fn saved() -> Self {
        let (setting, problem) = ServerSetting::load();
        let link = Self::default();
        link.set(setting);
        if let Some(problem) = problem {
            link.set_report(problem);
        }
        link
    }

    pub fn setting(&self) -> ServerSetting {
        self.setting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes effect from the worker's next phrase.
    pub fn set(&self, setting: ServerSetting) {
        *self.setting.lock().unwrap_or_else(|e| e.into_inner()) = setting;
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    pub fn report(&self) -> String {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_report(&self, text: String) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }
}

/// The local generator, and the server it asks first when the setting is on.
pub struct RemoteGenerator {
    local: Box<dyn Generator>,
    link: Arc<ServerLink>,
    /// The client for the setting seen last (`None`: off, or the URL is unusable).
    client: Option<ServerClient>,
    seen_changes: u64,
    /// No call before this, after a failure.
    quiet_until: Option<Instant>,
    pause: Duration,
}

impl RemoteGenerator {
    pub fn new(local: Box<dyn Generator>, link: Arc<ServerLink>) -> Self {
        Self {
            local,
            link,
            client: None,
            seen_changes: u64::MAX,
            quiet_until: None,
            pause: FIRST_PAUSE,
        }
    }

    /// The server's phrase, or `None` (having said why) when the local model is to write it.
    fn ask_server(&mut self, request: &PhraseRequest<'_>) -> Option<Phrase> {
        self.follow_setting();
        let client = self.client.as_ref()?;
        if self.quiet_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let started = Instant::now();
        let answer = client
            .post::<_, PhraseAnswer>("/v1/phrase", &PhraseCall::new("neural", request))
            .map_err(|e| e.to_string())
            .and_then(|answer| checked(answer, request));
        match answer {
            Ok((bars, version)) => {
                self.quiet_until = None;
                self.pause = FIRST_PAUSE;
                self.link.from_server.fetch_add(1, Ordering::Relaxed);
                self.link.set_report(format!(
                    "{}: model {version} wrote the last phrase in {} ms",
                    client.url(),
                    started.elapsed().as_millis()
                ));
                Some(bars)
            }
            Err(why) => {
                let text = format!(
                    "{}: {why}; the local model plays (asking again in {} s)",
                    client.url(),
                    self.pause.as_secs()
                );
                nice_plug::nice_log!("melodist: model server {text}");
                self.link.set_report(text);
                self.quiet_until = Some(Instant::now() + self.pause);
                self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                None
            }
        }
    }

    /// Rebuilds the client when the editor changed the setting.
    fn follow_setting(&mut self) {
        let changes = self.link.changes.load(Ordering::Acquire);
        if changes == self.seen_changes {
            return;
        }
        self.seen_changes = changes;
        self.quiet_until = None;
        self.pause = FIRST_PAUSE;
        let setting = self.link.setting();
        self.client = None;
        if !setting.enabled || setting.url.trim().is_empty() {
            if setting.enabled {
                self.link
                    .set_report("no server address; the local model plays".into());
            }
            return;
        }
        let token = Some(setting.token).filter(|t| !t.trim().is_empty());
        match ServerClient::with_token(&setting.url, token, CALL_LIMIT) {
            Ok(client) => {
                self.link
                    .set_report(format!("{}: not asked yet", client.url()));
                self.client = Some(client);
            }
            Err(e) => self
                .link
                .set_report(format!("{e:#}; the local model plays")),
        }
    }
}

/// The server's bars if they are what the worker asked for: as many bars, notes inside
/// their bar, MIDI ranges. Anything else is refused whole (the local model writes it).
fn checked(answer: PhraseAnswer, request: &PhraseRequest<'_>) -> Result<(Phrase, String), String> {
    if answer.bars.len() != request.bars {
        return Err(format!(
            "its phrase has {} bars, not {}",
            answer.bars.len(),
            request.bars
        ));
    }
    let bar_beats = request.meter.beats_per_bar();
    let fits = |n: &BeatNote| {
        (0.0..bar_beats).contains(&n.start)
            && n.duration > 0.0
            && n.start + n.duration <= bar_beats + 1e-9
            && n.pitch <= 127
            && (1..=127).contains(&n.velocity)
    };
    if let Some(bad) = answer.bars.iter().flatten().find(|n| !fits(n)) {
        return Err(format!("its phrase has a note outside its bar: {bad:?}"));
    }
    Ok((answer.bars, answer.version))
}

impl Generator for RemoteGenerator {
    fn name(&self) -> &str {
        self.local.name()
    }

    fn generate(&mut self, request: &PhraseRequest<'_>, rng: &mut SeedRng) -> Phrase {
        self.local.generate(request, rng)
    }

    fn render(&mut self, request: &PhraseRequest<'_>) -> Phrase {
        if let Some(bars) = self.ask_server(request) {
            return bars;
        }
        if self.client.is_some() {
            self.link.fell_back.fetch_add(1, Ordering::Relaxed);
        }
        self.local.render(request)
    }
}
