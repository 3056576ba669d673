#!/usr/bin/env python3
"""Rebuild Melodist's public-domain training corpus from the `music21` package.

    pip install music21==10.5.1
    python3 tools/export_corpus.py --out corpus/pd
    cargo run --release -- train-markov --midi-dir corpus/pd --out models/markov.bin

Writes one type-0 MIDI file per melody, following the conventions the shipped models were
trained with (see the README's "Training data" section):

- 480 ticks per quarter, channel 0, velocity 80, strictly monophonic;
- meta events: track name = title, time and key signatures at every change, tempo 120
  unless the tune states one;
- grace notes dropped, ties merged, chords reduced to one pitch (highest; lowest for a
  bass voice), overlaps truncated;
- repeats NOT expanded;
- a pickup bar is kept and preceded by a silent lead-in so the first full bar starts on a
  bar line of the MIDI time-signature grid.

Collections: O'Neill's Music of Ireland (oneills1850), Ryan's Mammoth Collection
(ryansMammoth) and the Bach chorales (one file per voice). All are public domain; the
encodings ship with music21 (BSD licence).
"""
import argparse
import csv
import os
import sys

TPQ = 480


def require_music21():
    try:
        import music21  # noqa: F401
    except ImportError:
        sys.exit("music21 is not installed: pip install music21==10.5.1")
    return music21


def vlq(n):
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def meta(delta, kind, data):
    return vlq(delta) + bytes([0xFF, kind]) + vlq(len(data)) + data


def write_midi(path, title, events, notes):
    """events: [(tick, bytes)] meta events; notes: [(start, end, pitch)] in ticks."""
    timed = [(t, 0, e) for t, e in events]
    for s, e, p in notes:
        timed.append((e, 1, bytes([0x80, p, 0])))
        timed.append((s, 2, bytes([0x90, p, 80])))
    timed.sort(key=lambda x: (x[0], x[1]))
    body = meta(0, 0x03, title.encode("utf-8"))
    last = 0
    for tick, order, data in timed:
        delta = tick - last
        last = tick
        body += vlq(delta) + data
    body += meta(0, 0x2F, b"")
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + TPQ.to_bytes(2, "big")
    track = b"MTrk" + len(body).to_bytes(4, "big") + body
    with open(path, "wb") as f:
        f.write(header + track)


def meta_event(kind, data):
    return bytes([0xFF, kind]) + vlq(len(data)) + data


def melody_of(part, m21, bass=False):
    """Monophonic (start, end, pitch) in ticks, plus meta events, with the pickup lead-in."""
    flat = part.flatten()
    notes = []
    for n in flat.notes:
        if n.duration.isGrace:
            continue
        if n.isChord:
            pitches = sorted(p.midi for p in n.pitches)
            pitch = pitches[0] if bass else pitches[-1]
        else:
            pitch = n.pitch.midi
        start = int(round(float(n.offset) * TPQ))
        end = start + int(round(float(n.duration.quarterLength) * TPQ))
        if end <= start:
            continue
        if notes and notes[-1][2] == pitch and notes[-1][1] == start and n.tie is not None and n.tie.type in ("stop", "continue"):
            notes[-1] = (notes[-1][0], end, pitch)  # merge a tie
            continue
        if notes and start < notes[-1][1]:
            if start == notes[-1][0]:
                continue
            notes[-1] = (notes[-1][0], start, notes[-1][2])  # truncate an overlap
        notes.append((start, end, pitch))
    events = []
    first_ts = None
    signatures = list(flat.getElementsByClass(m21.meter.TimeSignature))
    if not signatures:
        # e.g. ABC "M:C": the signature lives in the score's context, not in the part.
        signatures = list(part.getTimeSignatures(searchContext=True, returnDefault=False))[:1]
    for ts in signatures:
        tick = int(round(float(ts.offset) * TPQ))
        first_ts = first_ts or ts
        events.append((tick, meta_event(0x58, bytes([ts.numerator, ts.denominator.bit_length() - 1, 24, 8]))))
    for ks in flat.getElementsByClass(m21.key.KeySignature):
        tick = int(round(float(ks.offset) * TPQ))
        minor = 1 if getattr(ks, "mode", "major") == "minor" else 0
        events.append((tick, meta_event(0x59, bytes([ks.sharps & 0xFF, minor]))))
    tempo = 120.0
    marks = flat.getElementsByClass(m21.tempo.MetronomeMark)
    if marks:
        tempo = float(marks[0].getQuarterBPM() or 120.0)
    events.append((0, meta_event(0x51, int(round(60_000_000 / tempo)).to_bytes(3, "big"))))
    # Lead-in: shift so a pickup ends on a bar line of the MIDI grid.
    measures = part.getElementsByClass(m21.stream.Measure)
    lead_in = 0
    if measures and first_ts is not None:
        bar = int(round(first_ts.barDuration.quarterLength * TPQ))
        pickup = int(round(measures[0].duration.quarterLength * TPQ))
        if 0 < pickup < bar and measures[0].paddingLeft:
            lead_in = bar - pickup
    notes = [(s + lead_in, e + lead_in, p) for s, e, p in notes]
    events = [(t + lead_in if t > 0 else 0, e) for t, e in events]
    return notes, events


def export(out_dir, collections, limit=None):
    m21 = require_music21()
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for name in collections:
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        if name == "bach":
            paths = m21.corpus.getComposer("bach")
        else:
            paths = m21.corpus.getWork(name) or []
            paths = paths if isinstance(paths, list) else [paths]
        for path in paths:
            try:
                opus = m21.corpus.parse(path)
            except Exception as err:  # a broken encoding: skip, say which
                print(f"skip {path}: {err}", file=sys.stderr)
                continue
            scores = list(opus.scores) if hasattr(opus, "scores") and not isinstance(opus, m21.stream.Score) else [opus]
            if limit:
                scores = scores[:limit]
            for i, score in enumerate(scores):
                title = (score.metadata.title if score.metadata and score.metadata.title else f"{name} {i}")
                parts = score.parts if name == "bach" else score.parts[:1]
                for part in parts:
                    voice = (part.partName or "voice").lower().replace(" ", "")
                    base = os.path.splitext(os.path.basename(str(path)))[0]
                    if name == "bach":
                        fname = f"{base}_{voice}.mid"
                    else:
                        fname = f"{base}.mid" if len(scores) == 1 else f"{base}_{i + 1:04d}.mid"
                    notes, events = melody_of(part, m21, bass="bass" in voice)
                    if not notes:
                        continue
                    write_midi(os.path.join(folder, fname), title, events, notes)
                    rows.append([f"{name}/{fname}", name, title, len(notes)])
    with open(os.path.join(out_dir, "metadata.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "source", "title", "n_notes"])
        w.writerows(rows)
    print(f"wrote {len(rows)} melodies to {out_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="corpus/pd")
    ap.add_argument("--collections", nargs="+", default=["oneills1850", "ryansMammoth", "bach"])
    ap.add_argument("--limit", type=int, help="at most this many tunes per source file (for a quick check)")
    args = ap.parse_args()
    export(args.out, args.collections, args.limit)


if __name__ == "__main__":
    main()
