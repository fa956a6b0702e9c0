//! Errors of the protocol layer, shared by every interface.

/// Why a frame was refused before it reached a server's logic. Each
/// malformed-input class has its own variant (and its own wire code), so a
/// test can assert exactly which check caught a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ProtocolError {
    /// Shorter than its header, or than the payload the header declares, or
    /// a field runs past the end of the payload.
    Truncated = 1,
    /// Longer than [`crate::MAX_FRAME`], or declares a payload or list larger
    /// than the protocol allows.
    Oversized = 2,
    /// The first four bytes are not `b"XSVM"`.
    BadMagic = 3,
    /// A protocol version this build does not speak.
    UnknownVersion = 4,
    /// An interface id other than the endpoint's.
    UnknownInterface = 5,
    /// An opcode the interface does not define.
    UnknownOpcode = 6,
    /// The number of passed handles differs from what the message carries.
    WrongHandleCount = 7,
    /// A field holds a value outside its range (an enum code, a bool, a
    /// bounded count, a page count of zero).
    FieldOutOfRange = 8,
    /// The payload has bytes left over after the last field.
    TrailingBytes = 9,
    /// A frame kind that is not valid here (a reply sent to a server).
    BadKind = 10,
}

impl ProtocolError {
    pub const ALL: [ProtocolError; 10] = [
        Self::Truncated,
        Self::Oversized,
        Self::BadMagic,
        Self::UnknownVersion,
        Self::UnknownInterface,
        Self::UnknownOpcode,
        Self::WrongHandleCount,
        Self::FieldOutOfRange,
        Self::TrailingBytes,
        Self::BadKind,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

impl core::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

/// The class byte of an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorClass {
    Protocol = 1,
    Denied = 2,
    Server = 3,
}

/// An interface's own error enum: a closed set of `u16` codes starting at 1.
pub trait WireError: Sized + Copy + Eq + core::fmt::Debug + Send + Sync + 'static {
    fn code(self) -> u16;
    fn from_code(code: u16) -> Option<Self>;
    /// Every variant, for the conformance suite.
    fn all() -> &'static [Self];
}
