//! The one description of messages and interfaces.
//!
//! Why declarative macros and not a derive or an IDL file: the protocol is
//! small, the crate stays `no_std` without a proc-macro crate or a build
//! script, and the description reads like Hubris's idol files (opcode,
//! message, handles, reply, rights) while staying plain Rust that rustdoc
//! and rust-analyzer understand.

/// Declares a message struct and its wire encoding: fields in declaration
/// order, each by its own [`crate::Wire`] impl.
#[macro_export]
macro_rules! wire_struct {
    (
        $(#[$($m:tt)*])*
        pub struct $name:ident { $( $(#[$($fm:tt)*])* pub $field:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$($m)*])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name { $( $(#[$($fm)*])* pub $field: $ty, )* }

        impl $crate::Wire for $name {
            const MIN_SIZE: usize = 0 $( + <$ty as $crate::Wire>::MIN_SIZE )*;
            const MAX_SIZE: usize = 0 $( + <$ty as $crate::Wire>::MAX_SIZE )*;
            #[allow(unused_variables)]
            fn encode(&self, w: &mut $crate::Writer) {
                $( $crate::Wire::encode(&self.$field, w); )*
            }
            #[allow(unused_variables)]
            fn decode(r: &mut $crate::Reader<'_>) -> Result<Self, $crate::ProtocolError> {
                Ok(Self { $( $field: <$ty as $crate::Wire>::decode(r)?, )* })
            }
            fn example() -> Self {
                Self { $( $field: <$ty as $crate::Wire>::example(), )* }
            }
            fn schema() -> $crate::schema::Type {
                $crate::schema::Type::Struct($crate::schema::Struct {
                    name: stringify!($name),
                    doc: $crate::__docs!($([$($m)*])*),
                    fields: alloc::vec![$(
                        $crate::schema::Field {
                            name: stringify!($field),
                            doc: $crate::__docs!($([$($fm)*])*),
                            ty: <$ty as $crate::Wire>::schema(),
                        },
                    )*],
                })
            }
            #[cfg(feature = "proptest")]
            fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::{Just, Strategy};
                (Just(()), $( <$ty as $crate::Wire>::strategy(), )*)
                    .prop_map(|((), $( $field, )*)| Self { $( $field, )* })
                    .boxed()
            }
        }
    };
}

/// Declares a C-like enum carried as its integer code; an unknown code is
/// [`crate::ProtocolError::FieldOutOfRange`].
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$($m:tt)*])*
        pub enum $name:ident : $repr:ty { $( $(#[$($vm:tt)*])* $v:ident = $c:literal ),+ $(,)? }
    ) => {
        $(#[$($m)*])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name { $( $(#[$($vm)*])* $v = $c, )+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$v),+];
        }

        impl $crate::Wire for $name {
            const MIN_SIZE: usize = core::mem::size_of::<$repr>();
            const MAX_SIZE: usize = core::mem::size_of::<$repr>();
            fn encode(&self, w: &mut $crate::Writer) {
                $crate::Wire::encode(&(*self as $repr), w);
            }
            fn decode(r: &mut $crate::Reader<'_>) -> Result<Self, $crate::ProtocolError> {
                match <$repr as $crate::Wire>::decode(r)? {
                    $( $c => Ok(Self::$v), )+
                    _ => Err($crate::ProtocolError::FieldOutOfRange),
                }
            }
            fn example() -> Self {
                Self::ALL[Self::ALL.len() - 1]
            }
            fn schema() -> $crate::schema::Type {
                $crate::schema::Type::Enum {
                    name: stringify!($name),
                    doc: $crate::__docs!($([$($m)*])*),
                    repr: $crate::schema::Int::of_size(core::mem::size_of::<$repr>()),
                    variants: alloc::vec![$(
                        $crate::schema::Variant {
                            name: stringify!($v),
                            code: $c as u64,
                            doc: $crate::__docs!($([$($vm)*])*),
                        },
                    )+],
                }
            }
            #[cfg(feature = "proptest")]
            fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                proptest::sample::select(Self::ALL).boxed()
            }
        }
    };
}

/// Declares an integer newtype, optionally restricted to a range (values
/// outside it are [`crate::ProtocolError::FieldOutOfRange`]).
#[macro_export]
macro_rules! wire_newtype {
    ($(#[$($m:tt)*])* pub struct $name:ident($repr:ty)) => {
        $crate::wire_newtype!(@impl $(#[$($m)*])* $name $repr, <$repr>::MIN, <$repr>::MAX);
        impl $name {
            /// Every value of the full range is valid.
            pub const fn raw(v: $repr) -> Self {
                Self(v)
            }
        }
    };
    ($(#[$($m:tt)*])* pub struct $name:ident($repr:ty) in $lo:expr, $hi:expr) => {
        $crate::wire_newtype!(@impl $(#[$($m)*])* $name $repr, $lo, $hi);
    };
    (@impl $(#[$($m:tt)*])* $name:ident $repr:ty, $lo:expr, $hi:expr) => {
        $(#[$($m)*])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($repr);

        impl $name {
            pub const MIN: $repr = $lo;
            pub const MAX: $repr = $hi;
            /// `None` when `v` is outside the range the protocol allows.
            pub const fn new(v: $repr) -> Option<Self> {
                if v >= Self::MIN && v <= Self::MAX { Some(Self(v)) } else { None }
            }
            pub const fn get(self) -> $repr {
                self.0
            }
        }

        impl $crate::Wire for $name {
            const MIN_SIZE: usize = core::mem::size_of::<$repr>();
            const MAX_SIZE: usize = core::mem::size_of::<$repr>();
            fn encode(&self, w: &mut $crate::Writer) {
                $crate::Wire::encode(&self.0, w);
            }
            fn decode(r: &mut $crate::Reader<'_>) -> Result<Self, $crate::ProtocolError> {
                Self::new(<$repr as $crate::Wire>::decode(r)?).ok_or($crate::ProtocolError::FieldOutOfRange)
            }
            fn example() -> Self {
                Self::new(<$repr as $crate::Wire>::example()).unwrap_or(Self(Self::MAX))
            }
            fn schema() -> $crate::schema::Type {
                $crate::schema::Type::Newtype {
                    name: stringify!($name),
                    doc: $crate::__docs!($([$($m)*])*),
                    repr: $crate::schema::Int::of_size(core::mem::size_of::<$repr>()),
                    min: Self::MIN as u64,
                    max: Self::MAX as u64,
                }
            }
            #[cfg(feature = "proptest")]
            fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                (Self::MIN..=Self::MAX).prop_map(Self).boxed()
            }
        }
    };
}

/// A call marked `idempotent` in its interface may be sent again when its
/// server restarted before answering (the client stub retries it).
#[doc(hidden)]
#[macro_export]
macro_rules! __idempotent {
    () => {
        false
    };
    (idempotent) => {
        true
    };
}

/// Describes one interface: its id, its error enum, its calls (opcode,
/// request message, handles in, reply message, handles out, rights needed,
/// and `, idempotent` when sending it twice has the effect of sending it once)
/// and its one-way notifications. Generates the `Request`, `Reply` and error
/// enums, their codecs, and a [`crate::Call`] impl per request.
#[macro_export]
macro_rules! interface {
    (
        $(#[$($im:tt)*])*
        interface $iface:ident = $id:literal;
        $(#[$($em:tt)*])*
        errors $err:ident { $( $(#[$($evm:tt)*])* $ev:ident = $ec:literal ),+ $(,)? }
        calls { $(
            $(#[$($cm:tt)*])*
            $op:literal => $req:ident [$hin:literal] -> $rep:ident [$hout:literal]
                needs $($right:ident)|+ $(, $idem:ident)? ;
        )+ }
        notifications { $(
            $(#[$($nm:tt)*])*
            $nop:literal => $note:ident [$nhin:literal] needs $($nright:ident)|+ ;
        )* }
    ) => {
        $(#[$($im)*])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $iface;

        impl $crate::Interface for $iface {
            const ID: u16 = $id;
            const NAME: &'static str = stringify!($iface);
            type Request = Request;
            type Reply = Reply;
            type Error = $err;
            fn schema() -> $crate::schema::InterfaceDesc {
                fn fields(t: $crate::schema::Type) -> $crate::schema::Struct {
                    match t {
                        $crate::schema::Type::Struct(s) => s,
                        // wire_struct! is the only way to declare a message.
                        other => unreachable!("a message that is not a struct: {other:?}"),
                    }
                }
                $crate::schema::InterfaceDesc {
                    name: stringify!($iface),
                    id: $id,
                    doc: $crate::__docs!($([$($im)*])*),
                    error_enum: stringify!($err),
                    errors: alloc::vec![$(
                        $crate::schema::Variant {
                            name: stringify!($ev),
                            code: $ec as u64,
                            doc: $crate::__docs!($([$($evm)*])*),
                        },
                    )+],
                    calls: alloc::vec![
                        $( $crate::schema::CallDesc {
                            opcode: $op,
                            name: stringify!($req),
                            doc: $crate::__docs!($([$($cm)*])*),
                            one_way: false,
                            request: fields(<$req as $crate::Wire>::schema()),
                            handles_in: $hin,
                            reply: Some(fields(<$rep as $crate::Wire>::schema())),
                            handles_out: $hout,
                            rights: <$req as $crate::Call>::RIGHTS,
                            idempotent: <$req as $crate::Call>::IDEMPOTENT,
                        }, )+
                        $( $crate::schema::CallDesc {
                            opcode: $nop,
                            name: stringify!($note),
                            doc: $crate::__docs!($([$($nm)*])*),
                            one_way: true,
                            request: fields(<$note as $crate::Wire>::schema()),
                            handles_in: $nhin,
                            reply: None,
                            handles_out: 0,
                            rights: <$note as $crate::Call>::RIGHTS,
                            idempotent: false,
                        }, )*
                    ],
                }
            }
        }

        $(#[$($em)*])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum $err { $( $(#[$($evm)*])* $ev = $ec, )+ }

        impl $crate::WireError for $err {
            fn code(self) -> u16 {
                self as u16
            }
            fn from_code(code: u16) -> Option<Self> {
                match code {
                    $( $ec => Some(Self::$ev), )+
                    _ => None,
                }
            }
            fn all() -> &'static [Self] {
                &[$(Self::$ev),+]
            }
        }

        impl core::fmt::Display for $err {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }

        /// Every message a client may send on this interface.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $( $(#[$($cm)*])* $req($req), )+
            $( $(#[$($nm)*])* $note($note), )*
        }

        /// The reply to each call, named after the call.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Reply {
            $( $req($rep), )+
        }

        impl Request {
            /// The rights the caller's badge must hold for this request.
            pub fn required_rights(&self) -> $crate::Rights {
                match self {
                    $( Self::$req(_) => <$req as $crate::Call>::RIGHTS, )+
                    $( Self::$note(_) => <$note as $crate::Call>::RIGHTS, )*
                }
            }
            /// `true` for a notification: no reply is sent.
            pub fn is_one_way(&self) -> bool {
                match self {
                    $( Self::$req(_) => false, )+
                    $( Self::$note(_) => true, )*
                }
            }
            pub fn name(&self) -> &'static str {
                match self {
                    $( Self::$req(_) => stringify!($req), )+
                    $( Self::$note(_) => stringify!($note), )*
                }
            }
        }

        #[cfg(feature = "std")]
        impl $crate::server::RequestInfo for Request {
            fn rights(&self) -> $crate::Rights {
                self.required_rights()
            }
            fn one_way(&self) -> bool {
                self.is_one_way()
            }
        }

        impl $crate::Message for Request {
            fn opcode(&self) -> u16 {
                match self {
                    $( Self::$req(_) => $op, )+
                    $( Self::$note(_) => $nop, )*
                }
            }
            fn handle_count(&self) -> usize {
                match self {
                    $( Self::$req(_) => $hin, )+
                    $( Self::$note(_) => $nhin, )*
                }
            }
            fn encode_payload(&self, w: &mut $crate::Writer) {
                match self {
                    $( Self::$req(m) => $crate::Wire::encode(m, w), )+
                    $( Self::$note(m) => $crate::Wire::encode(m, w), )*
                }
            }
            #[deny(unreachable_patterns)] // two messages with one opcode fail the build
            fn decode_payload(opcode: u16, payload: &[u8], handles: usize) -> Result<Self, $crate::ProtocolError> {
                let mut r = $crate::Reader::new(payload);
                let msg = match opcode {
                    $( $op => {
                        if handles != $hin { return Err($crate::ProtocolError::WrongHandleCount); }
                        Self::$req(<$req as $crate::Wire>::decode(&mut r)?)
                    } )+
                    $( $nop => {
                        if handles != $nhin { return Err($crate::ProtocolError::WrongHandleCount); }
                        Self::$note(<$note as $crate::Wire>::decode(&mut r)?)
                    } )*
                    _ => return Err($crate::ProtocolError::UnknownOpcode),
                };
                r.finish()?;
                Ok(msg)
            }
            fn examples() -> alloc::vec::Vec<(&'static str, Self)> {
                alloc::vec![
                    $( (stringify!($req), Self::$req(<$req as $crate::Wire>::example())), )+
                    $( (stringify!($note), Self::$note(<$note as $crate::Wire>::example())), )*
                ]
            }
            #[cfg(feature = "proptest")]
            fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                let all: alloc::vec::Vec<proptest::strategy::BoxedStrategy<Self>> = alloc::vec![
                    $( <$req as $crate::Wire>::strategy().prop_map(Self::$req).boxed(), )+
                    $( <$note as $crate::Wire>::strategy().prop_map(Self::$note).boxed(), )*
                ];
                proptest::strategy::Union::new(all).boxed()
            }
        }

        impl $crate::Message for Reply {
            fn opcode(&self) -> u16 {
                match self {
                    $( Self::$req(_) => $op, )+
                }
            }
            fn handle_count(&self) -> usize {
                match self {
                    $( Self::$req(_) => $hout, )+
                }
            }
            fn encode_payload(&self, w: &mut $crate::Writer) {
                match self {
                    $( Self::$req(m) => $crate::Wire::encode(m, w), )+
                }
            }
            fn decode_payload(opcode: u16, payload: &[u8], handles: usize) -> Result<Self, $crate::ProtocolError> {
                let mut r = $crate::Reader::new(payload);
                let msg = match opcode {
                    $( $op => {
                        if handles != $hout { return Err($crate::ProtocolError::WrongHandleCount); }
                        Self::$req(<$rep as $crate::Wire>::decode(&mut r)?)
                    } )+
                    _ => return Err($crate::ProtocolError::UnknownOpcode),
                };
                r.finish()?;
                Ok(msg)
            }
            fn examples() -> alloc::vec::Vec<(&'static str, Self)> {
                alloc::vec![ $( (stringify!($req), Self::$req(<$rep as $crate::Wire>::example())), )+ ]
            }
            #[cfg(feature = "proptest")]
            fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                let all: alloc::vec::Vec<proptest::strategy::BoxedStrategy<Self>> = alloc::vec![
                    $( <$rep as $crate::Wire>::strategy().prop_map(Self::$req).boxed(), )+
                ];
                proptest::strategy::Union::new(all).boxed()
            }
        }

        $(
            impl From<$req> for Request {
                fn from(m: $req) -> Self {
                    Self::$req(m)
                }
            }
            impl $crate::Call for $req {
                type Interface = $iface;
                type Reply = $rep;
                const OPCODE: u16 = $op;
                const NAME: &'static str = stringify!($req);
                const RIGHTS: $crate::Rights = $crate::Rights::empty() $( .union($crate::Rights::$right) )+;
                const HANDLES_IN: usize = $hin;
                const HANDLES_OUT: usize = $hout;
                const ONE_WAY: bool = false;
                const IDEMPOTENT: bool = $crate::__idempotent!($($idem)?);
                #[allow(unreachable_patterns)]
                fn reply_from(reply: Reply) -> Option<$rep> {
                    match reply {
                        Reply::$req(m) => Some(m),
                        _ => None,
                    }
                }
            }
            const _: () = assert!(<$req as $crate::Wire>::MAX_SIZE <= $crate::MAX_PAYLOAD);
            const _: () = assert!(<$rep as $crate::Wire>::MAX_SIZE <= $crate::MAX_PAYLOAD);
            const _: () = assert!($hin < $crate::MAX_HANDLES + 1 && $hout < $crate::MAX_HANDLES + 1);
        )+
        $(
            impl From<$note> for Request {
                fn from(m: $note) -> Self {
                    Self::$note(m)
                }
            }
            impl $crate::Call for $note {
                type Interface = $iface;
                type Reply = ();
                const OPCODE: u16 = $nop;
                const NAME: &'static str = stringify!($note);
                const RIGHTS: $crate::Rights = $crate::Rights::empty() $( .union($crate::Rights::$nright) )+;
                const HANDLES_IN: usize = $nhin;
                const HANDLES_OUT: usize = 0;
                const ONE_WAY: bool = true;
                const IDEMPOTENT: bool = false;
                fn reply_from(_: Reply) -> Option<()> {
                    None
                }
            }
            const _: () = assert!(<$note as $crate::Wire>::MAX_SIZE <= $crate::MAX_PAYLOAD);
        )*
    };
}
