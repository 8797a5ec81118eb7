//! DPoP replay checks: what the edge asks a proof's replay object, what the object answers,
//! how the object judges a proof, and how an isolate groups its asks.
//!
//! One object per proof key (`dpop/<jkt>`): per location by default, or one worldwide
//! (`DPOP_REPLAY_SCOPE`). The object (`js/rate-limiter.js`, `#replay`) judges each proof by
//! its `until`, the last second any edge would accept it, whatever its own max age
//! (`VerifiedProof::remember_until`), and an id from its replay key ([`replay_entries`]):
//! - past `until` on the object's clock: seen (`0`);
//! - in its memory (the proofs it accepted, kept to their `until`): seen (`0`);
//! - at or under its floor: undecided (`2`, a 503 with `Retry-After`);
//! - else fresh (`1`), and remembered.
//!
//! Storage holds one number, the highest `until` the object accepted, written before any
//! proof above it is answered fresh; an object that starts again takes it as its floor. So
//! every proof accepted before a restart is under the new floor: exact across restarts with
//! one write per new highest second, not one per proof. What an honest client loses: after a
//! restart, its proofs not yet judged whose `iat` is no later than the newest proof accepted
//! before it (in flight, or made in that second; holders of one key whose clocks differ, until
//! the slower clock passes that second), each a 503; its next proof is above the floor. Past
//! a bound on memory, the object forgets whole seconds, oldest first, and raises its floor over
//! them. A last second more than an hour ahead of the object's clock is no edge's: refused. Its input gate holds other requests between the floor's read and the verdicts,
//! so of two isolates sending one proof, exactly one hears "fresh"; within one call, the
//! first of two equal proofs is the fresh one.
//!
//! The bound: with per-location objects, a proof is accepted at most once per location
//! within its window (`ProofRules::replay_window_secs`); with one object worldwide, once.
//!
//! **Group commit.** Proofs for a replay object that verify while a call to it is out wait in
//! its [`ReplayLines`] queue and go together, up to [`BATCH`], in the next call, sent when a
//! call out answers, or at once when the queue holds a full call. A request waits at most twice
//! the fetch timeout in all (then 503), and a call out is given up after one. Every call is
//! sent from the event of a request it carries (the runtime ties a fetch to the request whose
//! event started it, and a request that has answered may take its I/O along when it ends): a
//! queued request waits for the last call out from its own event (`Io::Join`), and the first
//! of them to wake after it sends the next (a call whose answer never comes, its request
//! dropped by the runtime, no longer holds anyone once given up). A call costs the edge more
//! CPU than a proof's checks and signature together (`docs/performance.md`, DPoP), so a
//! client sending many requests at once pays for a share of one each; a lone request waits
//! for no one and sends its own. Nothing is decided in the isolate: every proof is still the
//! object's to judge, one by one.

use shared::{UnixTime, VerifiedProof};

use super::url::RequestUrl;
use super::waits::WaitId;

/// Most proofs one replay call carries (a query of this many stays a few KiB).
pub(crate) const BATCH: usize = 64;
/// The object's path for a replay check.
const REPLAY_PATH: &str = "/dpop";

/// One proof's part of a replay query: its last second and its replay key.
pub(crate) fn replay_pair(proof: &VerifiedProof) -> String {
    let until = proof.remember_until().to_string();
    ["until=", &until, "&key=", &proof.replay_key()].concat()
}

/// The replay call for `pairs` (each from [`replay_pair`]), in order.
pub(crate) fn replay_url<'a>(pairs: impl IntoIterator<Item = &'a str>) -> String {
    let mut url = ["https://rate-limiter.internal", REPLAY_PATH, "?"].concat();
    for (at, pair) in pairs.into_iter().enumerate() {
        if at > 0 {
            url.push('&');
        }
        url.push_str(pair);
    }
    url
}

/// What the object said of one proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its first use.
    Fresh,
    /// Seen before (or past its last second on the object's clock).
    Seen,
    /// The object cannot tell: the proof is at or under its floor and not in its memory, so
    /// it may have been accepted before the object started (or trimmed its memory). Refused
    /// with 503 and `Retry-After`: the client's next proof, a second later, is above it.
    Undecided,
    /// No usable answer: why, for the log. The proof is refused (503), never taken unchecked.
    Unchecked(String),
}

/// The object's answer to a call of `count` proofs, one verdict each in order. The answer is
/// one character per proof, `1` for a first use, `0` for a replay and `2` for undecided; any
/// other answer leaves every proof unchecked.
pub(crate) fn verdicts(answer: Result<&str, &str>, count: usize) -> Vec<Verdict> {
    let answer = answer.and_then(|text| {
        let valid = text.len() == count && text.bytes().all(|b| matches!(b, b'0'..=b'2'));
        if valid {
            Ok(text)
        } else {
            Err("an answer that is not one 0, 1 or 2 per proof")
        }
    });
    match answer {
        Ok(text) => text
            .bytes()
            .map(|b| match b {
                b'1' => Verdict::Fresh,
                b'2' => Verdict::Undecided,
                _ => Verdict::Seen,
            })
            .collect(),
        Err(reason) => vec![Verdict::Unchecked(reason.to_owned()); count],
    }
}

/// For the object (`js/rate-limiter.js`): a replay call `url`'s proofs as `<until>:<id>`, in
/// order, one space between two; or `None` when `url` is not one (another path, a query not
/// made of 1 to [`BATCH`] pairs of `until` then a 43-character base64url `key`). `id` is the
/// key's first 48 bits as a decimal integer: exact in JavaScript, so the object remembers
/// numbers, not strings cut from the query (which would keep the whole query alive). Two
/// proofs of one key and one `until` share an `id` by chance once in 2^48 or so, and then
/// the second is refused as a replay: a retry with a new proof passes.
#[must_use]
pub fn replay_entries(url: &str) -> Option<String> {
    let parsed = RequestUrl::parse(url);
    if parsed.path() != REPLAY_PATH {
        return None;
    }
    let mut parts = parsed.query()?.split('&');
    let mut entries = String::new();
    let mut count = 0;
    while let Some(until) = parts.next() {
        let until: u64 = until.strip_prefix("until=")?.parse().ok()?;
        let key = parts.next()?.strip_prefix("key=")?;
        if until > MAX_EXACT_IN_JS || key.len() != KEY_LEN {
            return None;
        }
        let mut id: u64 = 0;
        for (at, byte) in key.bytes().enumerate() {
            let value = base64url_value(byte)?;
            if at < ID_CHARS {
                id = (id << 6) | u64::from(value);
            }
        }
        count += 1;
        if count > BATCH {
            return None;
        }
        if !entries.is_empty() {
            entries.push(' ');
        }
        entries.push_str(&until.to_string());
        entries.push(':');
        entries.push_str(&id.to_string());
    }
    Some(entries)
}

/// The largest integer a JavaScript number holds exactly (2^53 - 1): a larger `until` would
/// be rounded by the object.
const MAX_EXACT_IN_JS: u64 = (1 << 53) - 1;
/// Length of a proof's replay key (`VerifiedProof::replay_key`: SHA-256, unpadded base64url).
const KEY_LEN: usize = 43;
/// The replay key's characters an object's `id` is made of: 6 bits each, 48 in all.
const ID_CHARS: usize = 8;

/// The 6 bits a base64url character stands for.
fn base64url_value(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Each replay object's line in this isolate: the calls out, and the requests (their waits)
/// whose proofs go in the next one.
#[derive(Debug)]
pub(crate) struct ReplayLines {
    /// By object name; a line goes when no call is out and no one is queued. A list: the
    /// lines with requests waiting are few, and a map's code would weigh more in the bundle.
    lines: Vec<(String, Line)>,
    /// How long a call out is waited for: it settles within the fetch timeout, unless the
    /// runtime dropped the request that carried it, and then its answer never comes.
    patience_ms: u64,
}

#[derive(Debug)]
struct Line {
    /// The calls out, oldest first, each with the time it is given up at.
    out: Vec<(WaitId, UnixTime)>,
    queued: Vec<WaitId>,
}

/// What a request on a line does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Send the next call now, from its own event ([`ReplayLines::next_call`]).
    Send,
    /// Wait for this call out (the last sent) until it is given up, then look again.
    Wait(WaitId, UnixTime),
}

impl ReplayLines {
    /// No lines; a call out is waited for `patience_ms` at most.
    pub(crate) fn new(patience_ms: u64) -> Self {
        Self {
            lines: Vec::new(),
            patience_ms,
        }
    }

    /// Queues the request waiting under `id` for object `name` at `now`, and says what it
    /// does: send a call when none is out (or none is still waited for) or the queue holds
    /// a full one, else wait for the last call sent.
    pub(crate) fn join(&mut self, name: &str, id: WaitId, now: UnixTime) -> Turn {
        let at = match self.position(name) {
            Some(at) => at,
            None => {
                let line = Line {
                    out: Vec::new(),
                    queued: Vec::new(),
                };
                self.lines.push((name.to_owned(), line));
                self.lines.len() - 1
            }
        };
        let Some((_, line)) = self.lines.get_mut(at) else {
            return Turn::Send;
        };
        line.queued.push(id);
        if line.queued.len() >= BATCH {
            return Turn::Send;
        }
        Self::turn(line, now)
    }

    /// What a request still queued on `name` does when the call it waited for is over: the
    /// same choice as [`Self::join`]'s, without queueing it again.
    pub(crate) fn again(&mut self, name: &str, now: UnixTime) -> Turn {
        match self.line(name) {
            Some(line) => Self::turn(line, now),
            None => Turn::Send,
        }
    }

    fn turn(line: &mut Line, now: UnixTime) -> Turn {
        line.out.retain(|&(_, until)| now < until);
        match line.out.last() {
            Some(&(last, until)) => Turn::Wait(last, until),
            None => Turn::Send,
        }
    }

    /// The requests for the next call to `name`, up to [`BATCH`], oldest first; none when no
    /// one is queued. [`Self::sent`] names the call made.
    pub(crate) fn next_call(&mut self, name: &str) -> Vec<WaitId> {
        let Some(line) = self.line(name) else {
            return Vec::new();
        };
        let take = line.queued.len().min(BATCH);
        line.queued.drain(..take).collect()
    }

    /// The call to `name` sent at `now` is out under `call`; when it is given up.
    pub(crate) fn sent(&mut self, name: &str, call: WaitId, now: UnixTime) -> UnixTime {
        let until = now.plus_millis(self.patience_ms);
        if let Some(line) = self.line(name) {
            line.out.push((call, until));
        }
        until
    }

    /// The call `call` to `name` answered (or is known to be over).
    pub(crate) fn answered(&mut self, name: &str, call: WaitId) {
        if let Some(line) = self.line(name) {
            line.out.retain(|&(out, _)| out != call);
        }
        self.close_if_idle(name);
    }

    /// The request waiting under `id` left the line `name` (answered, or given up).
    pub(crate) fn leave(&mut self, name: &str, id: WaitId) {
        if let Some(line) = self.line(name) {
            line.queued.retain(|&queued| queued != id);
        }
        self.close_if_idle(name);
    }

    /// Closes the line `name` when no call is out and no one is queued.
    pub(crate) fn close_if_idle(&mut self, name: &str) {
        if let Some(at) = self.position(name) {
            if self
                .lines
                .get(at)
                .is_some_and(|(_, line)| line.out.is_empty() && line.queued.is_empty())
            {
                self.lines.swap_remove(at);
            }
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.lines.iter().position(|(line, _)| line == name)
    }

    fn line(&mut self, name: &str) -> Option<&mut Line> {
        let at = self.position(name)?;
        self.lines.get_mut(at).map(|(_, line)| line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_each_proofs_last_second_and_the_keys_first_48_bits_in_order() {
        let key = "A".repeat(43);
        // "B" is 1, "_" 63, "-" 62, "9" 61, "a" 26: the first 8 characters, 6 bits each.
        let other = ["BAAAAAA_", &"-".repeat(35)].concat();
        let last = ["_-9a____", &"A".repeat(35)].concat();
        let url = format!(
            "https://o/dpop?until=99&key={key}&until=1800000000&key={other}&until=7&key={last}"
        );
        let top = (63 << 42) | (62 << 36) | (61 << 30) | (26 << 24) | 0xff_ffff_u64;
        assert_eq!(
            replay_entries(&url).unwrap(),
            format!("99:0 1800000000:{} 7:{top}", (1_u64 << 42) | 63)
        );
        let full = vec![format!("until=9&key={key}"); BATCH];
        assert!(replay_entries(&replay_url(full.iter().map(String::as_str))).is_some());
        let exact = format!("https://o/dpop?until=9007199254740991&key={key}");
        assert_eq!(replay_entries(&exact).unwrap(), "9007199254740991:0");
        let over = vec![format!("until=9&key={key}"); BATCH + 1];
        for bad in [
            format!("https://o/lease?until=9&key={key}"),
            format!("https://o/dpop?key={key}&until=9"),
            format!("https://o/dpop?until=x&key={key}"),
            format!("https://o/dpop?until=9007199254740992&key={key}"),
            "https://o/dpop?until=9&key=short".to_owned(),
            format!("https://o/dpop?until=9&key={}", "+".repeat(43)),
            format!("https://o/dpop?until=9&key={key}&more=1"),
            format!("https://o/dpop?until=9&key={key}&until=9"),
            "https://o/dpop?".to_owned(),
            replay_url(over.iter().map(String::as_str)),
        ] {
            assert_eq!(replay_entries(&bad), None, "{bad}");
        }
    }

    #[test]
    fn an_answer_is_one_verdict_per_proof_or_none_at_all() {
        use Verdict::{Fresh, Seen, Unchecked, Undecided};
        assert_eq!(verdicts(Ok("102"), 3), [Fresh, Seen, Undecided]);
        let unusable = Unchecked("an answer that is not one 0, 1 or 2 per proof".to_owned());
        for short_or_odd in ["1", "101", "1x", "13", r#"{"fresh":true}"#] {
            assert_eq!(
                verdicts(Ok(short_or_odd), 2),
                [unusable.clone(), unusable.clone()]
            );
        }
        assert_eq!(verdicts(Err("gone"), 1), [Unchecked("gone".to_owned())]);
    }

    #[test]
    fn proofs_wait_for_a_call_out_until_they_fill_one_or_it_is_given_up() {
        let at = |ms: u64| UnixTime::from_millis(1_000_000 + ms);
        let mut lines = ReplayLines::new(100);
        assert_eq!(
            lines.join("o", WaitId(1), at(0)),
            Turn::Send,
            "the first sends"
        );
        assert_eq!(lines.next_call("o"), [WaitId(1)]);
        assert_eq!(lines.sent("o", WaitId(100), at(0)), at(100));
        let batch = u32::try_from(BATCH).unwrap();
        for id in 2..=batch {
            let turn = lines.join("o", WaitId(id), at(1));
            assert_eq!(turn, Turn::Wait(WaitId(100), at(100)));
        }
        assert_eq!(lines.join("other", WaitId(900), at(1)), Turn::Send);
        // The one that fills a call sends it, though a call is out.
        assert_eq!(lines.join("o", WaitId(batch + 1), at(1)), Turn::Send);
        let full = lines.next_call("o");
        assert_eq!((full.len(), full.first()), (BATCH, Some(&WaitId(2))));
        lines.sent("o", WaitId(101), at(1));
        let turn = lines.join("o", WaitId(2000), at(2));
        assert_eq!(turn, Turn::Wait(WaitId(101), at(101)));
        // The calls answer, in any order: the one still queued waits for what is still out,
        // then sends the next from its own event.
        lines.answered("o", WaitId(101));
        assert_eq!(lines.again("o", at(3)), Turn::Wait(WaitId(100), at(100)));
        lines.answered("o", WaitId(100));
        assert_eq!(lines.again("o", at(3)), Turn::Send);
        assert_eq!(lines.next_call("o"), [WaitId(2000)]);
        lines.sent("o", WaitId(102), at(3));
        // A call whose answer never comes is given up at its own deadline, however many
        // calls were sent after it.
        let turn = lines.join("o", WaitId(3000), at(102));
        assert_eq!(turn, Turn::Wait(WaitId(102), at(103)));
        lines.sent("o", WaitId(104), at(90));
        assert_eq!(lines.again("o", at(103)), Turn::Wait(WaitId(104), at(190)));
        lines.answered("o", WaitId(104));
        assert_eq!(lines.again("o", at(103)), Turn::Send);
        assert_eq!(lines.next_call("o"), [WaitId(3000)]);
        // A request that leaves takes its id along; the line closes when idle.
        assert_eq!(lines.join("o", WaitId(4000), at(200)), Turn::Send);
        lines.leave("o", WaitId(4000));
        assert_eq!(
            lines.position("o"),
            None,
            "nothing out, no one queued: closed"
        );
    }
}
