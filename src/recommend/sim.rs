//! A simulator of producers with latent tastes, for offline evaluation without real users.
//!
//! The model, in the order things happen (all randomness from one seed):
//! - **Catalogue**: `shared_presets` presets everyone has: the factory bank, then variants
//!   of it (tempo shifted, energy and moods perturbed) like downloaded preset packs. Each
//!   shared preset gets a rank in a Zipf popularity prior (some are simply better known).
//!   Then `user_presets` private presets per producer: a variant of one of the factory
//!   presets that suit them best, which only they can use (as in real life, where user
//!   presets live on one machine). Every preset has a hidden 3-d "character" vector.
//! - **Producers** (`producers` of them, each with log-uniform 5..200 sessions): a hidden
//!   3-d taste vector, three favourite tags, a preferred energy, and working habits taken
//!   from a "home" preset: usual tempo (± 5 BPM), usual meter (70 %), minor-key preference,
//!   how busily and where on the keyboard they play.
//! - **Quality** of preset j for producer p in a session: `taste ·` (character match +
//!   favourite tags + energy closeness) `+ context ·` (tempo inside the preset's range, meter
//!   listed, key mode accepted). The producer never sees it directly.
//! - **A session**: a context drawn from the habits; the producer tries 1..`max_tries`
//!   presets, each chosen by softmax over quality + `popularity ·` log prior + `habit ·`
//!   log(1 + times it worked for them before). A try works when quality + `keep_bias` +
//!   N(0, 0.5) noise > 0; with probability `noise` the feedback is flipped (a misclick, a
//!   bad day). Working tries log use for 1-10 minutes, likes, keeps and exports; failing
//!   ones a quick abandon or a dislike, sometimes a "new idea". A session usually ends once
//!   something works.
//! - **What gets logged.** By default the log is plugin-faithful: each try becomes a
//!   timeline of what the producer does at the plugin (select the preset, play and stop
//!   with their own play/stop habit, like, capture, ask for a new idea, switch on or stop),
//!   run through the plugin's own [`SessionTracker`] and turned into events the way the
//!   recorder writes them: only `preset_used` (rolling time), `kept_playing`, `liked`,
//!   `disliked`, `exported`, `new_idea`, `abandoned_quickly` and `context`, with the same
//!   timing rules; input statistics are known only when the producer played something.
//!   `rich_signals` instead logs the idealised events (explicit `kept`, quick abandons that
//!   say what the producer thought), which the plugin cannot observe.

use crate::music::{Key, Meter, PitchClass, Scale, SeedRng};
use crate::presets::{PresetLibrary, StylePreset};
use crate::sessions::{
    Event, EventKind, Observation, RecorderEvent, Session, SessionContext, SessionLog,
    SessionTracker,
};

/// Simulator knobs; see the module docs for what each one does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub producers: usize,
    pub min_sessions: usize,
    pub max_sessions: usize,
    /// Presets every producer can use (factory first, then variants).
    pub shared_presets: usize,
    /// Private presets per producer.
    pub user_presets: usize,
    pub seed: u64,
    pub taste: f32,
    pub context: f32,
    pub habit: f32,
    /// Exponent of the Zipf popularity prior.
    pub popularity: f32,
    /// Probability a feedback event is flipped.
    pub noise: f32,
    pub max_tries: usize,
    pub keep_bias: f32,
    /// Log idealised signals the plugin never records instead of the plugin-faithful log.
    pub rich_signals: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            producers: 300,
            min_sessions: 5,
            max_sessions: 200,
            shared_presets: 60,
            user_presets: 2,
            seed: 7,
            taste: 1.5,
            context: 1.5,
            habit: 1.0,
            popularity: 0.8,
            noise: 0.1,
            max_tries: 4,
            keep_bias: 0.0,
            rich_signals: false,
        }
    }
}

impl SimConfig {
    /// A planted world where only popularity matters: one try per session, always kept, no
    /// taste, context, habit or noise. The best possible HR@k is then the prior mass of the
    /// k most popular presets, which the popularity baseline should reach.
    pub fn planted_popularity(producers: usize, seed: u64) -> SimConfig {
        SimConfig {
            producers,
            min_sessions: 5,
            max_sessions: 30,
            shared_presets: 60,
            user_presets: 0,
            seed,
            taste: 0.0,
            context: 0.0,
            habit: 0.0,
            popularity: 1.0,
            noise: 0.0,
            max_tries: 1,
            keep_bias: 1e3,
            rich_signals: true,
        }
    }
}

/// A simulated world: the presets and the log.
pub struct Simulation {
    pub presets: Vec<StylePreset>,
    pub log: SessionLog,
    /// Each shared preset's choice probability under the popularity prior alone.
    pub prior: Vec<f64>,
}

fn normal(rng: &mut SeedRng) -> f32 {
    let u1 = rng.next_f32().max(1e-7);
    let u2 = rng.next_f32();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn uniform(rng: &mut SeedRng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f32()
}

fn below(rng: &mut SeedRng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// A copy of `base` with tempo, energy and one mood perturbed.
fn variant(
    base: &StylePreset,
    id: String,
    name: String,
    moods: &[String],
    rng: &mut SeedRng,
) -> StylePreset {
    let mut p = base.clone();
    p.id = id;
    p.name = name;
    let shift = uniform(rng, -12.0, 12.0);
    p.features.tempo_min = (p.features.tempo_min + shift).clamp(20.0, 400.0);
    p.features.tempo_max = (p.features.tempo_max + shift).clamp(p.features.tempo_min, 400.0);
    p.features.energy = (p.features.energy + uniform(rng, -0.15, 0.15)).clamp(0.0, 1.0);
    let slot = below(rng, p.features.moods.len());
    p.features.moods[slot] = moods[below(rng, moods.len())].clone();
    p
}

/// The factory presets and perturbed variants of them, `n` in all.
pub fn shared_catalogue(n: usize, rng: &mut SeedRng) -> Vec<StylePreset> {
    let factory = PresetLibrary::factory().presets().to_vec();
    let moods = all_moods(&factory);
    let mut presets: Vec<StylePreset> = factory.iter().take(n).cloned().collect();
    for v in 1..=n.saturating_sub(presets.len()) {
        let base = &factory[(v - 1) % factory.len()];
        presets.push(variant(
            base,
            format!("{}-v{v}", base.id),
            format!("{} {v}", base.name),
            &moods,
            rng,
        ));
    }
    presets
}

fn all_moods(presets: &[StylePreset]) -> Vec<String> {
    presets
        .iter()
        .flat_map(|p| p.features.moods.clone())
        .collect()
}

/// A producer's hidden make-up.
struct Producer {
    taste: [f32; 3],
    tags: Vec<String>,
    energy: f32,
    tempo: f32,
    meter: Meter,
    minor: f32,
    density: f32,
    register: f32,
}

const COMMON_METERS: [Meter; 4] = [
    Meter::new(4, 4),
    Meter::new(3, 4),
    Meter::new(6, 8),
    Meter::new(2, 4),
];

/// Runs the simulation described in the module docs.
pub fn simulate(cfg: &SimConfig) -> Simulation {
    let mut rng = SeedRng::derive(&[cfg.seed, 0x51A1]);
    let mut presets = shared_catalogue(cfg.shared_presets.max(1), &mut rng);
    let shared = presets.len();
    // Zipf prior over a random permutation of the shared presets.
    let mut rank: Vec<usize> = (0..shared).collect();
    for i in (1..shared).rev() {
        rank.swap(i, below(&mut rng, i + 1));
    }
    let mut log_prior: Vec<f32> = (0..shared)
        .map(|j| -cfg.popularity * ((rank[j] + 1) as f32).ln())
        .collect();
    let total: f64 = log_prior.iter().map(|l| (*l as f64).exp()).sum();
    let prior = log_prior
        .iter()
        .map(|l| (*l as f64).exp() / total)
        .collect();
    let moods = all_moods(&presets);
    let producers: Vec<Producer> = (0..cfg.producers)
        .map(|_| {
            let home = &presets[below(&mut rng, shared)];
            Producer {
                taste: [normal(&mut rng), normal(&mut rng), normal(&mut rng)],
                tags: (0..3)
                    .map(|_| moods[below(&mut rng, moods.len())].clone())
                    .collect(),
                energy: rng.next_f32(),
                tempo: (home.features.tempo_min + home.features.tempo_max) / 2.0
                    + 5.0 * normal(&mut rng),
                meter: home.meters()[0],
                minor: if home.features.key_mode == crate::presets::KeyMode::Minor {
                    0.8
                } else {
                    0.3
                },
                density: 4.0 * home.settings.density,
                register: home.register_centre() + 3.0 * normal(&mut rng),
            }
        })
        .collect();
    let mut character: Vec<[f32; 3]> = (0..shared)
        .map(|_| [normal(&mut rng), normal(&mut rng), normal(&mut rng)])
        .collect();
    // Private presets: a tweak of one of the five factory presets that suit the owner best.
    let mut owner: Vec<Option<usize>> = vec![None; shared];
    let factory = PresetLibrary::factory().presets().len().min(shared);
    for (pi, producer) in producers.iter().enumerate() {
        let mut suited: Vec<usize> = (0..factory).collect();
        let m = |j: usize| taste_match(producer, &presets[j], &character[j]);
        suited.sort_by(|&a, &b| m(b).total_cmp(&m(a)));
        for u in 0..cfg.user_presets {
            let base = presets[suited[below(&mut rng, 5.min(suited.len()))]].clone();
            let (id, name) = (
                format!("user-{pi:04}-{u}"),
                format!("{} (mine {u})", base.name),
            );
            presets.push(variant(&base, id, name, &moods, &mut rng));
            character.push([normal(&mut rng), normal(&mut rng), normal(&mut rng)]);
            owner.push(Some(pi));
            log_prior.push(0.0);
        }
    }
    let n = presets.len();

    let mut log = SessionLog::default();
    for (pi, producer) in producers.iter().enumerate() {
        let (lo, hi) = (
            cfg.min_sessions.max(1) as f32,
            cfg.max_sessions.max(cfg.min_sessions).max(1) as f32,
        );
        let sessions = (lo.ln() + rng.next_f32() * (hi.ln() - lo.ln()))
            .exp()
            .round() as usize;
        let mut worked = vec![0u32; n];
        let mut clock = 1_700_000_000_000i64 + pi as i64 * 1000;
        for si in 0..sessions {
            clock += 3_600_000 * (1 + below(&mut rng, 72) as i64);
            let context = session_context(producer, &mut rng);
            let quality: Vec<f32> = (0..n)
                .map(|j| {
                    cfg.taste * taste_match(producer, &presets[j], &character[j])
                        + cfg.context * context_truth(&presets[j], &context)
                })
                .collect();
            let mut events = Vec::new();
            let mut tries_log: Vec<(usize, bool, f32)> = Vec::new();
            let mut tried = vec![false; n];
            let mut t_ms = 0i64;
            let tries = 1 + below(&mut rng, cfg.max_tries.max(1));
            for _ in 0..tries {
                let weights: Vec<f32> = (0..n)
                    .map(|j| {
                        if tried[j] || owner[j].is_some_and(|o| o != pi) {
                            return 0.0;
                        }
                        (quality[j] + log_prior[j] + cfg.habit * (1.0 + worked[j] as f32).ln())
                            .exp()
                    })
                    .collect();
                let Some(j) = rng.weighted(&weights) else {
                    break;
                };
                tried[j] = true;
                let mut works = quality[j] + cfg.keep_bias + 0.5 * normal(&mut rng) > 0.0;
                if works {
                    worked[j] += 1;
                }
                if rng.next_f32() < cfg.noise {
                    works = !works;
                }
                let took = feedback_events(&mut events, &presets[j].id, works, t_ms, &mut rng);
                t_ms += took;
                tries_log.push((j, works, took as f32 / 1000.0));
                if works && rng.next_f32() < 0.7 {
                    break;
                }
            }
            let producer_id = format!("sim-{pi:04}");
            if cfg.rich_signals {
                log.sessions.push(Session {
                    producer: producer_id,
                    session: si as i64,
                    started_at_ms: clock,
                    ended_at_ms: Some(clock + t_ms + 60_000),
                    context,
                    events,
                });
            } else {
                let mut erng = SeedRng::derive(&[cfg.seed, pi as u64, si as u64, 0xFA17]);
                let habit = SeedRng::derive(&[cfg.seed, pi as u64, 0x5709]).next_f32() * 0.8;
                let recorded = plugin_timeline(&tries_log, &context, habit, &mut erng);
                log.sessions.extend(recorded_sessions(
                    &recorded,
                    &presets,
                    &producer_id,
                    si as i64,
                    clock,
                ));
            }
        }
    }
    log.sort();
    Simulation {
        presets,
        log,
        prior,
    }
}

fn session_context(p: &Producer, rng: &mut SeedRng) -> SessionContext {
    let meter = if rng.next_f32() < 0.7 {
        p.meter
    } else {
        COMMON_METERS[below(rng, COMMON_METERS.len())]
    };
    let scale = if rng.next_f32() < p.minor {
        Scale::Minor
    } else {
        Scale::Major
    };
    SessionContext {
        tempo: (p.tempo + 5.0 * normal(rng)).clamp(40.0, 220.0).round(),
        meter,
        key: Some(Key::new(
            PitchClass::from_index(below(rng, 12) as u8),
            scale,
        )),
        input_density: Some((p.density + 0.3 * normal(rng)).max(0.0)),
        input_register: Some(p.register + 2.0 * normal(rng)),
    }
}

/// Hidden taste: character vectors, favourite tags, energy. Roughly -1..2.
fn taste_match(p: &Producer, preset: &StylePreset, character: &[f32; 3]) -> f32 {
    let dot: f32 = p
        .taste
        .iter()
        .zip(character)
        .map(|(a, b)| a * b)
        .sum::<f32>()
        / 3.0;
    let tags = preset
        .features
        .moods
        .iter()
        .chain([&preset.style])
        .filter(|t| p.tags.contains(t))
        .count() as f32;
    dot + 0.5 * tags + (1.0 - 2.0 * (p.energy - preset.features.energy).abs())
}

/// The true fit of a preset to a situation: -1.5..1.5.
fn context_truth(preset: &StylePreset, ctx: &SessionContext) -> f32 {
    let f = &preset.features;
    let tempo = (f.tempo_min..=f.tempo_max).contains(&ctx.tempo) as u8 as f32;
    let meter = preset.meters().contains(&ctx.meter) as u8 as f32;
    let mode = ctx.key.is_none_or(|k| f.key_mode.accepts(k.scale)) as u8 as f32;
    tempo + meter + mode - 1.5
}

/// Appends the events of one try; returns how long it took in ms.
fn feedback_events(
    events: &mut Vec<Event>,
    preset: &str,
    works: bool,
    t0: i64,
    rng: &mut SeedRng,
) -> i64 {
    let seconds = if works {
        uniform(rng, 60.0, 600.0)
    } else {
        uniform(rng, 5.0, 50.0)
    };
    let mut push = |kind, t: i64, seconds| {
        events.push(Event {
            t_ms: t,
            kind,
            preset: Some(preset.to_string()),
            seconds,
            context: None,
        })
    };
    let end = t0 + (seconds * 1000.0) as i64;
    if works {
        let kept = rng.next_f32() < 0.7;
        if !kept || rng.next_f32() < 0.6 {
            push(EventKind::Liked, t0 + 5_000, None);
        }
        if kept {
            push(EventKind::Kept, t0 + 20_000, None);
        }
        if rng.next_f32() < 0.25 {
            push(EventKind::Exported, t0 + 40_000, None);
        }
    } else {
        if rng.next_f32() < 0.3 {
            push(EventKind::NewIdea, t0 + 2_000, None);
        }
        let kind = if rng.next_f32() < 0.5 {
            EventKind::AbandonedQuickly
        } else {
            EventKind::Disliked
        };
        push(kind, t0 + 4_000, None);
    }
    push(EventKind::PresetUsed, end, Some(seconds));
    end - t0
}

/// Runs one simulated session's tries through the plugin's [`SessionTracker`], as the
/// companion would see them: (seconds since start, event) in order. Each try is
/// `(preset, works, seconds listened)`; `stop_habit` is how often the producer stops the
/// transport for a moment while listening.
pub fn plugin_timeline(
    tries: &[(usize, bool, f32)],
    ctx: &SessionContext,
    stop_habit: f32,
    rng: &mut SeedRng,
) -> Vec<(f64, RecorderEvent)> {
    let mut tracker = SessionTracker::default();
    let mut out = Vec::new();
    let mut timeline = Vec::new();
    let plays_input = rng.next_f32() < 0.6;
    let mut now = 0.0f64;
    let mut obs = Observation {
        playing: false,
        tempo: ctx.tempo,
        meter: ctx.meter,
        key: ctx.key,
        input_density: None,
        input_register: None,
        preset: None,
    };
    let flush = |now: f64, out: &mut Vec<RecorderEvent>, timeline: &mut Vec<_>| {
        timeline.extend(out.drain(..).map(|e| (now, e)));
    };
    for &(preset, works, seconds) in tries {
        obs.preset = Some(preset as u16);
        tracker.observe(now, &obs, &mut out);
        flush(now, &mut out, &mut timeline);
        // Actions at offsets into the try, in rolling seconds.
        let mut actions: Vec<(f64, EventKind)> = Vec::new();
        if works {
            if rng.next_f32() < 0.5 {
                actions.push((5.0, EventKind::Liked));
            }
            if rng.next_f32() < 0.25 {
                actions.push((40.0, EventKind::Exported));
            }
        } else {
            if rng.next_f32() < 0.3 {
                actions.push((2.0, EventKind::NewIdea));
            }
            if rng.next_f32() < 0.5 {
                actions.push((4.0, EventKind::Disliked));
            }
        }
        let mut played = 0.0f64;
        let total = seconds as f64;
        while played < total {
            // A stretch of playing, then maybe a short stop.
            let stretch = if rng.next_f32() < stop_habit {
                (3.0 + 20.0 * rng.next_f32() as f64).min(total - played)
            } else {
                total - played
            };
            obs.playing = true;
            let end = played + stretch;
            while played < end {
                let step = (end - played).min(2.0);
                for &(at, kind) in &actions {
                    if at >= played && at < played + step {
                        tracker.action(kind, &mut out);
                    }
                }
                tracker.observe(now, &obs, &mut out);
                flush(now, &mut out, &mut timeline);
                if plays_input && played > 8.0 {
                    obs.input_density = ctx.input_density;
                    obs.input_register = ctx.input_register;
                }
                now += step;
                played += step;
            }
            tracker.observe(now, &obs, &mut out);
            flush(now, &mut out, &mut timeline);
            if played < total {
                obs.playing = false;
                tracker.observe(now, &obs, &mut out);
                now += 1.0 + 5.0 * rng.next_f32() as f64;
                tracker.observe(now, &obs, &mut out);
                flush(now, &mut out, &mut timeline);
            }
        }
    }
    obs.playing = false;
    tracker.observe(now, &obs, &mut out);
    tracker.finish(&mut out);
    flush(now, &mut out, &mut timeline);
    timeline
}

/// Turns recorder events into sessions as the recorder writes them (see
/// `sessions::recorder`): `Start` opens, `Context` fills unknowns and logs a change,
/// everything else needs an open session.
pub fn recorded_sessions(
    timeline: &[(f64, RecorderEvent)],
    presets: &[StylePreset],
    producer: &str,
    first_id: i64,
    clock_ms: i64,
) -> Vec<Session> {
    let mut sessions: Vec<Session> = Vec::new();
    let mut open = false;
    for &(t, ev) in timeline {
        let at = clock_ms + (t * 1000.0) as i64;
        match ev {
            RecorderEvent::Start { tempo, meter, key } => {
                sessions.push(Session {
                    producer: producer.to_string(),
                    session: first_id + sessions.len() as i64,
                    started_at_ms: at,
                    ended_at_ms: None,
                    context: SessionContext {
                        tempo,
                        meter,
                        key,
                        ..SessionContext::default()
                    },
                    events: Vec::new(),
                });
                open = true;
            }
            _ if !open => {}
            RecorderEvent::End => {
                open = false;
                if let Some(s) = sessions.last_mut() {
                    s.ended_at_ms = Some(at);
                }
            }
            RecorderEvent::Context {
                tempo,
                meter,
                key,
                input_density,
                input_register,
            } => {
                let s = sessions.last_mut().expect("open");
                let new = s.context.observe(SessionContext {
                    tempo,
                    meter,
                    key,
                    input_density,
                    input_register,
                });
                s.context = s.context.filled_from(&new);
                s.events.push(Event {
                    t_ms: at - s.started_at_ms,
                    kind: EventKind::Context,
                    preset: None,
                    seconds: None,
                    context: Some(new),
                });
            }
            RecorderEvent::PresetUsed { preset, seconds } => {
                let s = sessions.last_mut().expect("open");
                let e = Event::about(
                    at - s.started_at_ms,
                    EventKind::PresetUsed,
                    &presets[preset as usize].id,
                    Some(seconds),
                );
                s.events.push(e);
            }
            RecorderEvent::Feedback { kind, preset } => {
                let s = sessions.last_mut().expect("open");
                let e = Event::about(
                    at - s.started_at_ms,
                    kind,
                    &presets[preset as usize].id,
                    None,
                );
                s.events.push(e);
            }
        }
    }
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_within_bounds() {
        let cfg = SimConfig {
            producers: 6,
            max_sessions: 40,
            ..SimConfig::default()
        };
        let a = simulate(&cfg);
        let b = simulate(&cfg);
        assert_eq!(a.log, b.log);
        assert_eq!(a.presets.len(), cfg.shared_presets + 6 * cfg.user_presets);
        for p in &a.presets {
            p.validate().unwrap();
        }
        let producers = a.log.producers();
        assert_eq!(producers.len(), 6);
        for p in producers {
            let n = a.log.sessions.iter().filter(|s| s.producer == p).count();
            assert!((5..=40).contains(&n), "{p}: {n} sessions");
        }
        assert!((a.prior.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // Private presets appear only in their owner's sessions.
        for s in &a.log.sessions {
            for e in &s.events {
                // Context events are about no preset.
                let Some(id) = e.preset.as_deref() else {
                    assert_eq!(e.kind, EventKind::Context);
                    continue;
                };
                if let Some(rest) = id.strip_prefix("user-") {
                    assert_eq!(format!("sim-{}", &rest[..4]), s.producer);
                }
            }
        }
    }
}
