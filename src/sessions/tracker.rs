//! The logging rules: what the plugin observes, turned into the session log's events.
//!
//! The companion thread (and the simulator, so offline numbers see the same log) feeds a
//! [`SessionTracker`] with what it sees at each look ([`Observation`]: transport, tempo,
//! meter, key, input statistics, the preset in use) and with the producer's actions (like,
//! dislike, capture, new idea); the tracker answers with [`RecorderEvent`]s. The rules:
//!
//! - A session opens when the transport starts rolling, never while it is stopped: switching
//!   presets or pressing Like before anything played records nothing.
//! - Stopping does not end the session (play/stop habits are one session); it ends after
//!   [`TrackerRules::session_gap_s`] stopped, or when the plugin closes.
//! - Use is rolling time: seconds the transport played with the preset active. Stopped time
//!   is not use.
//! - A quick abandon is a switch to another preset after more than zero and less than
//!   [`TrackerRules::quick_abandon_s`] seconds of rolling use. A stop, or the session
//!   ending, is never an abandon.
//! - `kept_playing`: the preset kept playing for [`TrackerRules::kept_bars`] bars of rolling
//!   transport with no preset change and no new idea; once per stretch (a new idea starts a
//!   new stretch).
//! - Context: a `context` event whenever, while playing, tempo (≥ 0.5 BPM), meter, key or the
//!   input statistics (density ≥ 0.25 notes/beat, register ≥ 2 semitones) moved since the
//!   last one recorded, at most once per [`TrackerRules::context_every_s`] (meter and key
//!   changes are never held back).
//! - Feedback (like, dislike, capture, new idea) is recorded only inside an open session and
//!   only about a preset in use.

use super::EventKind;
use super::recorder::RecorderEvent;
use crate::music::{Key, Meter};

/// The timing rules; [`TrackerRules::default`] is what the plugin uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerRules {
    pub quick_abandon_s: f64,
    pub kept_bars: f64,
    pub session_gap_s: f64,
    pub context_every_s: f64,
}

impl Default for TrackerRules {
    fn default() -> Self {
        Self {
            quick_abandon_s: 10.0,
            kept_bars: 16.0,
            session_gap_s: 600.0,
            context_every_s: 1.0,
        }
    }
}

/// What the plugin sees at one look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub playing: bool,
    pub tempo: f32,
    pub meter: Meter,
    pub key: Option<Key>,
    /// Notes per beat the producer played recently, when they played anything.
    pub input_density: Option<f32>,
    /// Mean MIDI pitch of that input.
    pub input_register: Option<f32>,
    /// The preset in use (library index), if any.
    pub preset: Option<u16>,
}

impl Default for Observation {
    fn default() -> Self {
        Self {
            playing: false,
            tempo: 120.0,
            meter: Meter::default(),
            key: None,
            input_density: None,
            input_register: None,
            preset: None,
        }
    }
}

/// The last context written, to tell a change from jitter.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    tempo: f32,
    meter: Meter,
    key: Option<Key>,
    density: Option<f32>,
    register: Option<f32>,
    at: f64,
}

/// The state machine behind the rules in the module docs. Times are seconds on any
/// monotonic clock.
#[derive(Debug, Clone)]
pub struct SessionTracker {
    pub rules: TrackerRules,
    open: bool,
    playing: bool,
    last_t: Option<f64>,
    stopped_since: Option<f64>,
    preset: Option<u16>,
    /// Rolling seconds of the current preset in this session.
    rolling_s: f64,
    /// Rolling bars since the last preset change or new idea.
    bars: f64,
    kept_sent: bool,
    recorded: Option<Recorded>,
    tempo: f32,
    meter: Meter,
}

impl Default for SessionTracker {
    fn default() -> Self {
        Self::new(TrackerRules::default())
    }
}

impl SessionTracker {
    pub fn new(rules: TrackerRules) -> Self {
        Self {
            rules,
            open: false,
            playing: false,
            last_t: None,
            stopped_since: None,
            preset: None,
            rolling_s: 0.0,
            bars: 0.0,
            kept_sent: false,
            recorded: None,
            tempo: 120.0,
            meter: Meter::default(),
        }
    }

    /// Whether a session is open.
    pub fn in_session(&self) -> bool {
        self.open
    }

    /// The preset in use, as last observed.
    pub fn preset(&self) -> Option<u16> {
        self.preset
    }

    /// One look at the plugin at time `now`; appends the events to record.
    pub fn observe(&mut self, now: f64, obs: &Observation, out: &mut Vec<RecorderEvent>) {
        // Time since the last look belongs to the state seen then.
        let dt = self.last_t.map_or(0.0, |t| (now - t).max(0.0));
        self.last_t = Some(now);
        if self.open && self.playing && self.preset.is_some() {
            self.rolling_s += dt;
            let beats_per_bar = self.meter.beats_per_bar().max(1e-3);
            self.bars += dt * self.tempo as f64 / 60.0 / beats_per_bar;
            if self.bars >= self.rules.kept_bars && !self.kept_sent {
                self.kept_sent = true;
                if let Some(preset) = self.preset {
                    out.push(RecorderEvent::Feedback {
                        kind: EventKind::KeptPlaying,
                        preset,
                    });
                }
            }
        }
        self.tempo = obs.tempo;
        self.meter = obs.meter;

        if obs.preset != self.preset {
            self.close_preset(true, out);
            self.preset = obs.preset;
        }

        if obs.playing && !self.playing {
            self.stopped_since = None;
            if !self.open {
                self.open = true;
                self.rolling_s = 0.0;
                self.new_stretch();
                out.push(RecorderEvent::Start {
                    tempo: obs.tempo,
                    meter: obs.meter,
                    key: obs.key,
                });
                self.recorded = Some(Recorded {
                    tempo: obs.tempo,
                    meter: obs.meter,
                    key: obs.key,
                    density: None,
                    register: None,
                    at: now,
                });
            }
        } else if !obs.playing && self.playing {
            self.stopped_since = Some(now);
        }
        self.playing = obs.playing;

        if self.open
            && !self.playing
            && self
                .stopped_since
                .is_some_and(|t| now - t >= self.rules.session_gap_s)
        {
            self.end(out);
        }

        if self.open && self.playing {
            self.context(now, obs, out);
        }
    }

    /// The producer acted: `Liked`, `Disliked`, `Exported` (capture) or `NewIdea`. Returns
    /// whether anything was recorded.
    pub fn action(&mut self, kind: EventKind, out: &mut Vec<RecorderEvent>) -> bool {
        if kind == EventKind::NewIdea {
            self.new_stretch();
        }
        match self.preset.filter(|_| self.open) {
            Some(preset) => {
                out.push(RecorderEvent::Feedback { kind, preset });
                true
            }
            None => false,
        }
    }

    /// The plugin closes: ends the open session (never an abandon).
    pub fn finish(&mut self, out: &mut Vec<RecorderEvent>) {
        if self.open {
            self.end(out);
        }
    }

    fn end(&mut self, out: &mut Vec<RecorderEvent>) {
        self.close_preset(false, out);
        out.push(RecorderEvent::End);
        self.open = false;
        self.stopped_since = None;
        self.recorded = None;
    }

    fn new_stretch(&mut self) {
        self.bars = 0.0;
        self.kept_sent = false;
    }

    /// The current preset stops being in use: log its rolling time and, when switched away
    /// from (`switched`) quickly, an abandon.
    fn close_preset(&mut self, switched: bool, out: &mut Vec<RecorderEvent>) {
        if let Some(preset) = self.preset
            && self.open
            && self.rolling_s > 0.0
        {
            out.push(RecorderEvent::PresetUsed {
                preset,
                seconds: self.rolling_s as f32,
            });
            if switched && self.rolling_s < self.rules.quick_abandon_s {
                out.push(RecorderEvent::Feedback {
                    kind: EventKind::AbandonedQuickly,
                    preset,
                });
            }
        }
        self.rolling_s = 0.0;
        self.new_stretch();
    }

    fn context(&mut self, now: f64, obs: &Observation, out: &mut Vec<RecorderEvent>) {
        let Some(last) = self.recorded else {
            return;
        };
        let moved = |a: Option<f32>, b: Option<f32>, by: f32| match (a, b) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(a), Some(b)) => (a - b).abs() >= by,
        };
        let key = obs.key.or(last.key);
        let structural = obs.meter != last.meter || key != last.key;
        let soft = (obs.tempo - last.tempo).abs() >= 0.5
            || moved(last.density, obs.input_density, 0.25)
            || moved(last.register, obs.input_register, 2.0);
        if structural || (soft && now - last.at >= self.rules.context_every_s) {
            let density = obs.input_density.or(last.density);
            let register = obs.input_register.or(last.register);
            out.push(RecorderEvent::Context {
                tempo: obs.tempo,
                meter: obs.meter,
                key,
                input_density: density,
                input_register: register,
            });
            self.recorded = Some(Recorded {
                tempo: obs.tempo,
                meter: obs.meter,
                key,
                density,
                register,
                at: now,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(playing: bool, preset: Option<u16>) -> Observation {
        Observation {
            playing,
            preset,
            ..Observation::default()
        }
    }

    /// Runs `steps` of (seconds to advance, observation), 0.1 s looks in between.
    fn run(t: &mut SessionTracker, now: &mut f64, secs: f64, o: Observation) -> Vec<RecorderEvent> {
        let mut out = Vec::new();
        let end = *now + secs;
        t.observe(*now, &o, &mut out);
        while *now + 0.1 <= end + 1e-9 {
            *now += 0.1;
            t.observe(*now, &o, &mut out);
        }
        out
    }

    fn kinds(events: &[RecorderEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                RecorderEvent::Start { .. } => "start".to_string(),
                RecorderEvent::End => "end".to_string(),
                RecorderEvent::Context { .. } => "context".to_string(),
                RecorderEvent::PresetUsed { preset, seconds } => {
                    format!("used {preset} {:.0}", seconds)
                }
                RecorderEvent::Feedback { kind, preset } => format!("{} {preset}", kind.as_str()),
            })
            .collect()
    }

    #[test]
    fn a_stop_within_seconds_is_not_an_abandon() {
        let mut t = SessionTracker::default();
        let mut now = 0.0;
        let mut ev = run(&mut t, &mut now, 3.0, obs(true, Some(2)));
        ev.extend(run(&mut t, &mut now, 2.0, obs(false, Some(2))));
        t.finish(&mut ev);
        assert_eq!(kinds(&ev), vec!["start", "used 2 3", "end"]);
    }

    #[test]
    fn a_quick_switch_is_an_abandon() {
        let mut t = SessionTracker::default();
        let mut now = 0.0;
        let mut ev = run(&mut t, &mut now, 4.0, obs(true, Some(1)));
        ev.extend(run(&mut t, &mut now, 30.0, obs(true, Some(5))));
        assert_eq!(
            kinds(&ev)[..3],
            ["start", "used 1 4", "abandoned_quickly 1"]
        );
    }

    #[test]
    fn nothing_is_recorded_while_stopped_and_stopped_time_is_not_use() {
        let mut t = SessionTracker::default();
        let mut now = 0.0;
        let mut ev = run(&mut t, &mut now, 5.0, obs(false, Some(1)));
        ev.extend(run(&mut t, &mut now, 5.0, obs(false, Some(2))));
        assert!(!t.action(EventKind::Liked, &mut ev));
        assert!(ev.is_empty(), "phantom session: {:?}", kinds(&ev));
        // Play 20 s, stop 60 s, play 20 s: 40 s of use, one session.
        ev.extend(run(&mut t, &mut now, 20.0, obs(true, Some(2))));
        ev.extend(run(&mut t, &mut now, 60.0, obs(false, Some(2))));
        ev.extend(run(&mut t, &mut now, 20.0, obs(true, Some(2))));
        t.finish(&mut ev);
        let k = kinds(&ev);
        assert_eq!(k.iter().filter(|k| *k == "start").count(), 1);
        assert!(k.contains(&"used 2 40".to_string()), "{k:?}");
    }

    #[test]
    fn a_long_stop_ends_the_session() {
        let mut t = SessionTracker::default();
        let mut now = 0.0;
        let mut ev = run(&mut t, &mut now, 20.0, obs(true, Some(0)));
        ev.extend(run(&mut t, &mut now, 700.0, obs(false, Some(0))));
        assert!(!t.in_session());
        ev.extend(run(&mut t, &mut now, 1.0, obs(true, Some(0))));
        assert_eq!(kinds(&ev), vec!["start", "used 0 20", "end", "start"]);
    }

    #[test]
    fn kept_playing_after_n_bars_once_per_stretch() {
        let mut t = SessionTracker::default();
        let mut now = 0.0;
        // 120 BPM 4/4: a bar is 2 s, 16 bars 32 s.
        let ev = run(&mut t, &mut now, 31.0, obs(true, Some(3)));
        assert!(!kinds(&ev).contains(&"kept_playing 3".to_string()));
        let mut ev = run(&mut t, &mut now, 40.0, obs(true, Some(3)));
        assert_eq!(
            kinds(&ev).iter().filter(|k| *k == "kept_playing 3").count(),
            1
        );
        // A new idea starts a new stretch; stopped time does not count towards it.
        t.action(EventKind::NewIdea, &mut ev);
        ev.extend(run(&mut t, &mut now, 100.0, obs(false, Some(3))));
        assert_eq!(kinds(&ev).last().unwrap(), "new_idea 3");
        ev.extend(run(&mut t, &mut now, 33.0, obs(true, Some(3))));
        assert_eq!(kinds(&ev).last().unwrap(), "kept_playing 3");
    }

    #[test]
    fn context_changes_are_recorded() {
        let mut t = SessionTracker::default();
        let mut now = 0.0;
        let mut ev = run(&mut t, &mut now, 5.0, obs(true, Some(0)));
        let key = Some(Key::new(
            crate::music::PitchClass::A,
            crate::music::Scale::Minor,
        ));
        let o = Observation {
            tempo: 96.0,
            meter: Meter::new(6, 8),
            key,
            input_density: Some(1.5),
            input_register: Some(64.0),
            ..obs(true, Some(0))
        };
        ev.extend(run(&mut t, &mut now, 5.0, o));
        let contexts: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, RecorderEvent::Context { .. }))
            .collect();
        assert_eq!(contexts.len(), 1, "{:?}", kinds(&ev));
        assert_eq!(
            *contexts[0],
            RecorderEvent::Context {
                tempo: 96.0,
                meter: Meter::new(6, 8),
                key,
                input_density: Some(1.5),
                input_register: Some(64.0),
            }
        );
    }
}
