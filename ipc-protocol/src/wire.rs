//! Field encoding and the traits every message and interface implements.

use alloc::vec::Vec;

use crate::{ProtocolError, Rights, WireError};

/// Appends little-endian fields to a payload.
#[derive(Default, Debug)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_bytes(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }
    pub fn put(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads fields from a payload; every read is bounds-checked.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.remaining() {
            return Err(ProtocolError::Truncated);
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// A payload must be consumed exactly.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes)
        }
    }
}

/// A value with a fixed, bounded wire encoding.
pub trait Wire: Sized + core::fmt::Debug + Clone + 'static {
    /// Fewest bytes an encoding takes (used to refuse a list count before
    /// allocating for it).
    const MIN_SIZE: usize;
    /// Most bytes an encoding takes (checked against [`crate::MAX_PAYLOAD`]
    /// at compile time for every message).
    const MAX_SIZE: usize;
    fn encode(&self, w: &mut Writer);
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError>;
    /// A fixed value with every field set, for the golden vectors.
    fn example() -> Self;
    /// This type as data, for the generated wire-format reference.
    fn schema() -> crate::schema::Type;
    #[cfg(feature = "proptest")]
    fn strategy() -> proptest::strategy::BoxedStrategy<Self>;
}

macro_rules! wire_int {
    ($($t:ty = $example:expr),* $(,)?) => {$(
        impl Wire for $t {
            const MIN_SIZE: usize = core::mem::size_of::<$t>();
            const MAX_SIZE: usize = core::mem::size_of::<$t>();
            fn encode(&self, w: &mut Writer) {
                w.put(&self.to_le_bytes());
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
                Ok(<$t>::from_le_bytes(r.take_array()?))
            }
            fn example() -> Self {
                $example
            }
            fn schema() -> crate::schema::Type {
                crate::schema::Type::Int(crate::schema::Int::of_size(core::mem::size_of::<$t>()))
            }
            #[cfg(feature = "proptest")]
            fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                proptest::arbitrary::any::<$t>().boxed()
            }
        }
    )*};
}

wire_int!(
    u8 = 0xa1,
    u16 = 0xb2c3,
    u32 = 0xd4e5_f607,
    u64 = 0x0123_4567_89ab_cdef
);

impl Wire for bool {
    const MIN_SIZE: usize = 1;
    const MAX_SIZE: usize = 1;
    fn encode(&self, w: &mut Writer) {
        w.put(&[*self as u8]);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match r.take_array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtocolError::FieldOutOfRange),
        }
    }
    fn example() -> Self {
        true
    }
    fn schema() -> crate::schema::Type {
        crate::schema::Type::Bool
    }
    #[cfg(feature = "proptest")]
    fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
        use proptest::strategy::Strategy;
        proptest::arbitrary::any::<bool>().boxed()
    }
}

/// A list of at most `N` elements: a `u16` count, then the elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundedVec<T, const N: usize>(Vec<T>);

impl<T, const N: usize> BoundedVec<T, N> {
    pub const CAPACITY: usize = N;
    /// `None` when `items` holds more than `N` elements.
    pub fn new(items: Vec<T>) -> Option<Self> {
        (items.len() <= N).then_some(Self(items))
    }
    /// The first `N` of `items` (for a list its builder keeps within `N`).
    pub fn truncated(mut items: Vec<T>) -> Self {
        items.truncate(N);
        Self(items)
    }
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Wire, const N: usize> Wire for BoundedVec<T, N> {
    const MIN_SIZE: usize = 2;
    const MAX_SIZE: usize = 2 + N * T::MAX_SIZE;
    fn encode(&self, w: &mut Writer) {
        (self.0.len() as u16).encode(w);
        for item in &self.0 {
            item.encode(w);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let count = u16::decode(r)? as usize;
        if count > N {
            return Err(ProtocolError::Oversized);
        }
        // Never allocate for elements the payload cannot hold.
        if count.saturating_mul(T::MIN_SIZE.max(1)) > r.remaining() {
            return Err(ProtocolError::Truncated);
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::decode(r)?);
        }
        Ok(Self(items))
    }
    fn example() -> Self {
        Self((0..N.min(3)).map(|_| T::example()).collect())
    }
    fn schema() -> crate::schema::Type {
        crate::schema::Type::List {
            elem: alloc::boxed::Box::new(T::schema()),
            max: N,
        }
    }
    #[cfg(feature = "proptest")]
    fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(T::strategy(), 0..=N)
            .prop_map(Self)
            .boxed()
    }
}

/// One interface of DESIGN.md section 5a, generated by [`crate::interface!`].
pub trait Interface: 'static {
    const ID: u16;
    const NAME: &'static str;
    #[cfg(feature = "std")]
    type Request: Message + crate::server::RequestInfo;
    #[cfg(not(feature = "std"))]
    type Request: Message;
    type Reply: Message;
    type Error: WireError;
    /// The interface as data (generated by [`crate::interface!`]).
    fn schema() -> crate::schema::InterfaceDesc;
}

/// A request or reply enum of one interface.
pub trait Message: Sized + core::fmt::Debug + Clone + PartialEq + Send + 'static {
    fn opcode(&self) -> u16;
    /// Handles (file descriptors) travelling with this message.
    fn handle_count(&self) -> usize;
    fn encode_payload(&self, w: &mut Writer);
    /// Decodes a payload for `opcode` that arrived with `handles` handles.
    fn decode_payload(opcode: u16, payload: &[u8], handles: usize) -> Result<Self, ProtocolError>;
    /// One example of every message, named, for the golden vectors.
    fn examples() -> Vec<(&'static str, Self)>;
    #[cfg(feature = "proptest")]
    fn strategy() -> proptest::strategy::BoxedStrategy<Self>;
}

/// One request message: which interface it belongs to, what it is answered
/// with, and the rights the caller's badge must hold. Client stubs are
/// generic over this trait, so a call is typed end to end.
pub trait Call: Wire + Into<<Self::Interface as Interface>::Request> {
    type Interface: Interface;
    type Reply: Wire;
    const OPCODE: u16;
    const NAME: &'static str;
    const RIGHTS: Rights;
    const HANDLES_IN: usize;
    const HANDLES_OUT: usize;
    /// `true` for a one-way notification (no reply is sent).
    const ONE_WAY: bool;
    /// Sending it twice has the effect of sending it once: a client stub
    /// may send it again when the server restarted before answering.
    const IDEMPOTENT: bool;
    fn reply_from(reply: <Self::Interface as Interface>::Reply) -> Option<Self::Reply>;
}

/// The empty reply of a one-way notification.
impl Wire for () {
    const MIN_SIZE: usize = 0;
    const MAX_SIZE: usize = 0;
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(())
    }
    fn example() -> Self {}
    fn schema() -> crate::schema::Type {
        crate::schema::Type::Struct(crate::schema::Struct {
            name: "()",
            doc: &[],
            fields: Vec::new(),
        })
    }
    #[cfg(feature = "proptest")]
    fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
        use proptest::strategy::Strategy;
        proptest::strategy::Just(()).boxed()
    }
}
