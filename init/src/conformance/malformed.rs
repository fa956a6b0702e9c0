//! The malformed-input table (ipc.md, "Checking a received frame"): each
//! case breaks one thing in an otherwise valid frame and expects exactly
//! the protocol error the documented order of checks gives, or the
//! endpoint closed; after each, the server must still answer a good call.
//! The cases are built from the interface's golden frames and its schema,
//! so every interface gets the table, and a frame refused before its
//! handler runs is safe to send to a live system.

use ipc_protocol::client::RawError;
use ipc_protocol::schema::{CallDesc, Int, Type};
use ipc_protocol::{Interface, ProtocolError, HEADER_LEN, MAX_FRAME, MAX_HANDLES};

use super::endpoint::{fresh_id, Checked};
use super::golden::{self, GoldenFrame, QUIET};
use super::{memfds, recipes, Outcome, Session};

/// What a case must get back.
enum Expect {
    Error(ProtocolError),
    /// No answer (a frame sent as a notification is never answered).
    Silence,
}

struct Case {
    name: String,
    frame: Vec<u8>,
    /// Memfds to pass with it.
    handles: usize,
    expect: Expect,
    /// The request id the error frame must carry (0 when the frame is too
    /// short to hold one).
    answer_id: u64,
}

impl Case {
    fn new(name: &str, frame: Vec<u8>, handles: usize, expect: Expect) -> Self {
        let answer_id = frame
            .get(16..HEADER_LEN)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        Self {
            name: format!("malformed.{name}"),
            frame,
            handles,
            expect,
            answer_id,
        }
    }
    fn opcode_echo(&self) -> u16 {
        self.frame
            .get(8..10)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    }
}

/// A golden frame with its request id replaced.
fn with_id(f: &GoldenFrame, id: u64) -> Vec<u8> {
    let mut b = f.bytes.clone();
    b[16..HEADER_LEN].copy_from_slice(&id.to_le_bytes());
    b
}

fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn set_len(b: &mut [u8], len: usize) {
    b[12..16].copy_from_slice(&(len as u32).to_le_bytes());
}

/// The cases for interface `desc`, around `base`: a golden call with a
/// payload and no handles.
fn table(desc: &ipc_protocol::schema::InterfaceDesc, base: &GoldenFrame) -> Vec<Case> {
    use Expect::Error as E;
    use ProtocolError as P;
    let good = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = with_id(base, fresh_id());
        f(&mut b);
        b
    };
    let payload_len = base.bytes.len() - HEADER_LEN;
    let other_interface = desc.id % 7 + 1;
    let mut t = vec![
        Case::new(
            "truncated.header",
            good(&|b| b.truncate(10)),
            0,
            E(P::Truncated),
        ),
        Case::new(
            "truncated.payload",
            good(&|b| b.truncate(b.len() - 1)),
            0,
            E(P::Truncated),
        ),
        Case::new(
            "truncated.field",
            good(&|b| {
                b.truncate(b.len() - 1);
                set_len(b, payload_len - 1);
            }),
            0,
            E(P::Truncated),
        ),
        Case::new(
            "oversized.datagram",
            good(&|b| b.resize(MAX_FRAME + 100, 0)),
            0,
            E(P::Oversized),
        ),
        Case::new(
            "oversized.declared",
            good(&|b| set_len(b, MAX_FRAME)),
            0,
            E(P::Oversized),
        ),
        Case::new("magic", good(&|b| b[0] = b'Y'), 0, E(P::BadMagic)),
        Case::new(
            "version.2",
            good(&|b| set_u16(b, 4, 2)),
            0,
            E(P::UnknownVersion),
        ),
        Case::new(
            "version.0",
            good(&|b| set_u16(b, 4, 0)),
            0,
            E(P::UnknownVersion),
        ),
        Case::new(
            "interface.other",
            good(&|b| set_u16(b, 6, other_interface)),
            0,
            E(P::UnknownInterface),
        ),
        Case::new(
            "interface.unknown",
            good(&|b| set_u16(b, 6, 0xfff0)),
            0,
            E(P::UnknownInterface),
        ),
        Case::new(
            "opcode.unknown",
            good(&|b| {
                set_u16(b, 8, 0xfff0);
                b.truncate(HEADER_LEN);
                set_len(b, 0);
            }),
            0,
            E(P::UnknownOpcode),
        ),
        Case::new("kind.zero", good(&|b| b[10] = 0), 0, E(P::BadKind)),
        Case::new("kind.reply", good(&|b| b[10] = 2), 0, E(P::BadKind)),
        Case::new("kind.error", good(&|b| b[10] = 3), 0, E(P::BadKind)),
        Case::new("kind.unknown", good(&|b| b[10] = 9), 0, E(P::BadKind)),
        Case::new(
            "kind.call_as_notification",
            {
                let mut b = with_id(base, 0);
                b[10] = 4;
                b
            },
            0,
            Expect::Silence,
        ),
        Case::new(
            "handles.unexpected",
            good(&|b| b[11] = 1),
            1,
            E(P::WrongHandleCount),
        ),
        Case::new(
            "handles.header_disagrees",
            good(&|b| b[11] = 2),
            0,
            E(P::WrongHandleCount),
        ),
        Case::new(
            "handles.over_the_limit",
            good(&|b| b[11] = MAX_HANDLES as u8 + 1),
            MAX_HANDLES + 1,
            E(P::WrongHandleCount),
        ),
        Case::new(
            "trailing_bytes",
            good(&|b| {
                b.push(0);
                set_len(b, payload_len + 1);
            }),
            0,
            E(P::TrailingBytes),
        ),
    ];
    t.extend(schema_cases(desc));
    t
}

/// The cases that need a particular message: a call that takes a handle,
/// a field with a restricted range, a list, a notification.
fn schema_cases(desc: &ipc_protocol::schema::InterfaceDesc) -> Vec<Case> {
    use Expect::Error as E;
    use ProtocolError as P;
    let golden = golden::requests(desc.name);
    let frame_of = |c: &CallDesc| golden.iter().find(|g| g.message == c.name);
    let mut t = Vec::new();
    if let Some(g) = desc
        .calls
        .iter()
        .find(|c| c.handles_in > 0)
        .and_then(frame_of)
    {
        let mut b = with_id(g, fresh_id());
        b[11] = 0;
        t.push(Case::new("handles.missing", b, 0, E(P::WrongHandleCount)));
    }
    let calls = desc
        .calls
        .iter()
        .filter(|c| !c.one_way && c.handles_in == 0);
    if let Some((g, at, bad)) = calls
        .clone()
        .find_map(|c| Some((frame_of(c)?, out_of_range(c)?)))
        .map(|(g, (a, v))| (g, a, v))
    {
        let mut b = with_id(g, fresh_id());
        b[HEADER_LEN + at..HEADER_LEN + at + bad.len()].copy_from_slice(&bad);
        t.push(Case::new("field.out_of_range", b, 0, E(P::FieldOutOfRange)));
    }
    if let Some((g, at, max)) = calls
        .clone()
        .find_map(|c| Some((frame_of(c)?, first_list(c)?)))
        .map(|(g, (a, m))| (g, a, m))
    {
        let mut b = with_id(g, fresh_id());
        set_u16(&mut b, HEADER_LEN + at, (max + 1) as u16);
        t.push(Case::new("oversized.list", b, 0, E(P::Oversized)));
    }
    if let Some(g) = desc
        .calls
        .iter()
        .find(|c| c.one_way && c.handles_in == 0)
        .and_then(frame_of)
    {
        let mut b = with_id(g, fresh_id());
        b[10] = 1;
        t.push(Case::new(
            "kind.notification_as_request",
            b,
            0,
            E(P::BadKind),
        ));
        let mut b = g.bytes.clone();
        b.push(0);
        let len = b.len() - HEADER_LEN;
        set_len(&mut b, len);
        t.push(Case::new(
            "notification.malformed_is_dropped",
            b,
            0,
            Expect::Silence,
        ));
    }
    t
}

/// The encoded size of a field of type `ty` in a golden payload (lists
/// are never before a field the suite edits, so their size is their
/// example's: the count and three elements, or fewer when `max` is).
fn size_of(ty: &Type) -> Option<usize> {
    Some(match ty {
        Type::Int(i) => i.size(),
        Type::Bool => 1,
        Type::Newtype { repr, .. } | Type::Enum { repr, .. } => repr.size(),
        Type::Bitmap { bits, .. } => bits / 8,
        Type::List { elem, max } => 2 + (*max).min(3) * size_of(elem)?,
        Type::Struct(s) => s
            .fields
            .iter()
            .map(|f| size_of(&f.ty))
            .sum::<Option<usize>>()?,
    })
}

/// The payload offset of the first field of `c`'s request that has values
/// the wire forbids, and one such value encoded.
fn out_of_range(c: &CallDesc) -> Option<(usize, Vec<u8>)> {
    let mut at = 0;
    for f in &c.request.fields {
        let bad = match &f.ty {
            Type::Bool => Some(vec![2]),
            Type::Enum { repr, variants, .. } => (0..=repr_max(*repr).min(0xffff))
                .find(|v| variants.iter().all(|x| x.code != *v))
                .map(|v| v.to_le_bytes()[..repr.size()].to_vec()),
            Type::Newtype { repr, min, max, .. } if *min > 0 => {
                Some((min - 1).to_le_bytes()[..repr.size()].to_vec())
            }
            Type::Newtype { repr, max, .. } if *max < repr_max(*repr) => {
                Some((max + 1).to_le_bytes()[..repr.size()].to_vec())
            }
            _ => None,
        };
        if let Some(bad) = bad {
            return Some((at, bad));
        }
        at += size_of(&f.ty)?;
    }
    None
}

/// The payload offset and bound of the first list in `c`'s request.
fn first_list(c: &CallDesc) -> Option<(usize, usize)> {
    let mut at = 0;
    for f in &c.request.fields {
        if let Type::List { max, .. } = &f.ty {
            return Some((at, *max));
        }
        at += size_of(&f.ty)?;
    }
    None
}

fn repr_max(i: Int) -> u64 {
    match i {
        Int::U8 => u8::MAX as u64,
        Int::U16 => u16::MAX as u64,
        Int::U32 => u32::MAX as u64,
        Int::U64 => u64::MAX,
    }
}

/// The golden call the table is built around: no handles, a payload, and
/// safe on a live system (a conformant server never runs it, but one that
/// mistakes a malformed frame for a good one might).
fn base(name: &str) -> Option<GoldenFrame> {
    golden::requests(name).into_iter().find(|f| {
        f.handles() == 0
            && !f.is_notification()
            && f.bytes.len() > HEADER_LEN
            && recipes::unsafe_on_live_system(name, f.message).is_none()
    })
}

/// Every case of the table, each followed by the liveness call.
pub fn run<I: Interface>(s: &mut Session<'_>) {
    let desc = I::schema();
    let Some(base) = base(I::NAME) else {
        s.record(
            "malformed",
            Outcome::Fail("no golden call to build the table from".into()),
        );
        return;
    };
    let names: Vec<String> = table(&desc, &base).iter().map(|c| c.name.clone()).collect();
    for name in [
        "malformed.handles.missing",
        "malformed.field.out_of_range",
        "malformed.oversized.list",
        "malformed.kind.notification_as_request",
        "malformed.notification.malformed_is_dropped",
    ] {
        if !names.iter().any(|n| n == name) {
            s.record(
                name,
                Outcome::Skip(format!("no message of {} to build it from", I::NAME)),
            );
        }
    }
    for case in table(&desc, &base) {
        let outcome = run_case::<I>(s, &case);
        s.record(&case.name, outcome);
    }
}

fn run_case<I: Interface>(s: &mut Session<'_>, case: &Case) -> Outcome {
    let ep = match s.full() {
        Ok(ep) => ep,
        Err(e) => return Outcome::Fail(e),
    };
    let mut note = None;
    match case.expect {
        Expect::Silence => {
            if let Err(e) = ep.send(&case.frame, memfds(case.handles)) {
                return Outcome::Fail(format!("sending: {e}"));
            }
            if let Err(e) = ep.quiet_for(QUIET) {
                return Outcome::Fail(format!("a frame that must go unanswered: {e}"));
            }
        }
        Expect::Error(want) => {
            let answer = ep.exchange(&case.frame, memfds(case.handles));
            match answer.check::<I>(case.answer_id, case.opcode_echo()) {
                Checked::Error(RawError::Protocol(got)) if got == want => {}
                Checked::Error(e) => return Outcome::Fail(format!("expected {want:?}, got {e:?}")),
                Checked::Reply(r, _) => return Outcome::Fail(format!("accepted it: {r:?}")),
                Checked::Closed => {
                    s.closed();
                    note = Some("closed the endpoint".to_string());
                }
                Checked::Bad(why) => return Outcome::Fail(why),
            }
        }
    }
    let ep = match s.full() {
        Ok(ep) => ep,
        Err(e) => return Outcome::Fail(format!("reconnecting: {e}")),
    };
    match recipes::liveness(I::NAME, ep) {
        Ok(()) => note.map_or(Outcome::Pass, Outcome::Note),
        Err(e) => Outcome::Fail(format!("the next good call was not answered: {e}")),
    }
}
