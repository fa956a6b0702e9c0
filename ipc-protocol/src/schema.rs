//! Every message, field type and error of the protocol as data.
//!
//! The macros of [`crate::wire_struct!`], [`crate::wire_enum!`],
//! [`crate::wire_newtype!`] and [`crate::interface!`] describe what they
//! declare here as well, so the wire-format reference (`docs/ipc.md`, its
//! machine-readable schema) is generated from the same one description as
//! the codec and cannot drift from it. A hand-written [`crate::Wire`] impl
//! must describe itself too (`Wire::schema` has no default on purpose).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::Rights;

/// The doc-comment lines of a declaration, as the macros captured them.
pub type Doc = &'static [&'static str];

/// Joins doc-comment lines into text (the one space rustdoc leaves after
/// `///` removed).
pub fn doc_text(doc: Doc) -> String {
    let mut out = String::new();
    for (i, line) in doc.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line.strip_prefix(' ').unwrap_or(line));
    }
    out
}

/// An unsigned little-endian integer of the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int {
    U8,
    U16,
    U32,
    U64,
}

impl Int {
    /// The integer of `bytes` bytes (every integer of the protocol is
    /// unsigned).
    pub const fn of_size(bytes: usize) -> Self {
        match bytes {
            1 => Self::U8,
            2 => Self::U16,
            4 => Self::U32,
            _ => Self::U64,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::U16 => "u16",
            Self::U32 => "u32",
            Self::U64 => "u64",
        }
    }
    pub const fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::U32 => 4,
            Self::U64 => 8,
        }
    }
}

/// The wire type of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    Int(Int),
    /// One byte, 0 or 1.
    Bool,
    /// A named integer, valid only in `min..=max`.
    Newtype {
        name: &'static str,
        doc: Doc,
        repr: Int,
        min: u64,
        max: u64,
    },
    /// A closed set of integer codes.
    Enum {
        name: &'static str,
        doc: Doc,
        repr: Int,
        variants: Vec<Variant>,
    },
    /// `bits` bits as `bits / 64` little-endian `u64` words; bit `i` is bit
    /// `i % 64` of word `i / 64`.
    Bitmap {
        name: &'static str,
        doc: Doc,
        bits: usize,
    },
    /// A `u16` count (at most `max`), then the elements.
    List {
        elem: Box<Type>,
        max: usize,
    },
    /// Fields in declaration order.
    Struct(Struct),
}

impl Type {
    /// The struct this type is, if it is one (every message is).
    pub fn as_struct(&self) -> Option<&Struct> {
        match self {
            Self::Struct(s) => Some(s),
            _ => None,
        }
    }
    /// The name other declarations refer to this type by.
    pub fn name(&self) -> String {
        match self {
            Self::Int(i) => i.name().into(),
            Self::Bool => "bool".into(),
            Self::Newtype { name, .. } | Self::Enum { name, .. } | Self::Bitmap { name, .. } => {
                (*name).into()
            }
            Self::List { elem, max } => alloc::format!("list<{}, {max}>", elem.name()),
            Self::Struct(s) => s.name.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Struct {
    pub name: &'static str,
    pub doc: Doc,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub doc: Doc,
    pub ty: Type,
}

/// An enum variant or an error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    pub code: u64,
    pub doc: Doc,
}

/// One request of an interface: a call (answered) or a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDesc {
    pub opcode: u16,
    pub name: &'static str,
    pub doc: Doc,
    /// A notification: sent with kind 4 and never answered.
    pub one_way: bool,
    pub request: Struct,
    pub handles_in: usize,
    /// `None` for a notification.
    pub reply: Option<Struct>,
    pub handles_out: usize,
    /// What the caller's badge must hold.
    pub rights: Rights,
    /// Sending it twice has the effect of sending it once: a caller may
    /// send it again when its server restarted before answering (never
    /// true of a notification).
    pub idempotent: bool,
}

/// One control message (frame kind 5, [`crate::Control`]): news about the
/// endpoint itself, valid on an endpoint of any interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlDesc {
    pub opcode: u16,
    /// Its payload, fields in order.
    pub message: Struct,
}

/// One interface, as `interface!` declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceDesc {
    pub name: &'static str,
    pub id: u16,
    pub doc: Doc,
    /// The name of the interface's error enum.
    pub error_enum: &'static str,
    pub errors: Vec<Variant>,
    pub calls: Vec<CallDesc>,
}

impl InterfaceDesc {
    /// Every right some request of this interface needs.
    pub fn all_rights(&self) -> Rights {
        self.calls
            .iter()
            .fold(Rights::empty(), |r, c| r.union(c.rights))
    }
    pub fn call(&self, name: &str) -> Option<&CallDesc> {
        self.calls.iter().find(|c| c.name == name)
    }
}

/// Keeps the doc attributes of a declaration (`#[doc = "..."]`, which is
/// what `///` becomes) and drops every other attribute.
#[doc(hidden)]
#[macro_export]
macro_rules! __docs {
    (@keep [$($out:expr),*]) => { &[$($out),*] };
    (@keep [$($out:expr),*] [doc = $d:expr] $($rest:tt)*) => {
        $crate::__docs!(@keep [$($out,)* $d] $($rest)*)
    };
    (@keep [$($out:expr),*] [$($other:tt)*] $($rest:tt)*) => {
        $crate::__docs!(@keep [$($out),*] $($rest)*)
    };
    ($($attr:tt)*) => { $crate::__docs!(@keep [] $($attr)*) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::pager::{Pager, Snapshot};
    use crate::{Interface, Wire};

    #[test]
    fn doc_comments_reach_the_schema() {
        let s = Snapshot::schema();
        let s = s.as_struct().unwrap();
        assert_eq!(
            doc_text(s.doc),
            "Per-page state, like the HMM selftests' snapshot."
        );
        assert_eq!(s.fields.len(), 3);
        assert_eq!(s.fields[2].ty.name(), "PageCount");
        let p = Pager::schema();
        assert_eq!(p.id, 1);
        assert_eq!(p.call("Snapshot").unwrap().rights, Rights::SNAPSHOT);
        assert_eq!(p.errors[0].name, "NoSuchObject");
        assert_eq!(
            doc_text(p.errors[0].doc),
            "No such object, or not the caller's."
        );
    }

    #[test]
    fn newtype_ranges_and_enum_codes_are_described() {
        let Type::Newtype { min, max, repr, .. } = crate::types::PageCount::schema() else {
            panic!("PageCount is a newtype");
        };
        assert_eq!((min, max, repr), (1, 512, Int::U16));
        let Type::Enum { variants, .. } = crate::types::Advice::schema() else {
            panic!("Advice is an enum");
        };
        assert_eq!(variants[3].name, "AtomicDevice");
        assert_eq!(variants[3].code, 3);
        assert_eq!(
            doc_text(variants[3].doc),
            "GPU atomics need the pages in VRAM."
        );
    }
}
