//! Incremental message assembly: [`ServerReader`] (frames from a client, which must be masked)
//! and [`ClientReader`] (frames from a backend, which must not be).
//!
//! `read` takes whatever bytes the caller has, consumes what it can, and hands back at most one
//! event per call. It never buffers a partial frame header: when fewer than a whole header's
//! bytes are available it consumes nothing, and the caller keeps them in its input buffer.
//! Payload bytes are consumed as they come (copied into the message buffer, or inflated).
//!
//! Rule violations return the [`CloseReason`] to close with; the reader is then poisoned and
//! returns the same error forever. After the peer's close frame, further input is discarded.

use bytes::Bytes;

use super::deflate::Inflater;
use super::frame::{parse_close_payload, parse_frame_header, unmask, CONTROL_MAX};
use super::{reserve_bounded, CloseReason, Opcode, WsEvent};

/// Size of the buffer compressed payload is unmasked into before inflating.
const SCRATCH_MAX: usize = 16 * 1024;

/// The most compressed bytes one message may take on the wire: deflate expands incompressible
/// data by 5 bytes per 64 KiB stored block, so `max + max/16 + 1 KiB` never refuses a message
/// that inflates within `max`, while a stream of empty blocks cannot run on forever.
fn compressed_max(max: usize) -> u64 {
    (max as u64)
        .saturating_add(max as u64 / 16)
        .saturating_add(1024)
}

/// The frame whose payload is being read.
#[derive(Clone, Copy, Debug)]
struct FrameState {
    opcode: Opcode,
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    /// Payload bytes already read (the mask phase).
    offset: usize,
}

/// A data message being assembled across frames.
#[derive(Debug)]
struct MsgState {
    text: bool,
    compressed: bool,
    buf: Vec<u8>,
    /// `buf[..utf8_ok]` is known-valid UTF-8; the rest is at most an incomplete code point.
    utf8_ok: usize,
    frames: u32,
    /// Compressed payload bytes received (compressed messages are not buffered, but their
    /// wire size is bounded too, see [`compressed_max`]).
    wire_len: u64,
}

impl MsgState {
    /// Checks the bytes appended since the last call: 1007 on an invalid sequence; an
    /// incomplete code point at the end is left for the next fragment.
    fn check_utf8(&mut self) -> Result<(), CloseReason> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.buf[self.utf8_ok..]) {
            Ok(_) => self.utf8_ok = self.buf.len(),
            Err(e) if e.error_len().is_none() => self.utf8_ok += e.valid_up_to(),
            Err(_) => return Err(CloseReason::invalid_data("text is not UTF-8")),
        }
        debug_assert!(self.buf.len() - self.utf8_ok < 4);
        Ok(())
    }
}

/// The shared reader; `expect_masked` selects the role.
struct Reader {
    expect_masked: bool,
    max: usize,
    inflater: Option<Inflater>,
    frame: Option<FrameState>,
    msg: Option<MsgState>,
    control: Vec<u8>,
    scratch: Vec<u8>,
    closed: bool,
    failed: Option<CloseReason>,
    last_fragmented: bool,
}

impl Reader {
    fn new(expect_masked: bool, max: usize, inflater: Option<Inflater>) -> Self {
        Reader {
            expect_masked,
            max,
            inflater,
            frame: None,
            msg: None,
            // Allocated by the first control frame: an idle session keeps no buffer.
            control: Vec::new(),
            scratch: Vec::new(),
            closed: false,
            failed: None,
            last_fragmented: false,
        }
    }

    fn read(&mut self, input: &[u8]) -> Result<(usize, Option<WsEvent>), CloseReason> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.closed {
            return Ok((input.len(), None));
        }
        match self.read_inner(input) {
            Ok((n, ev)) => {
                debug_assert!(n <= input.len());
                debug_assert!(self.msg.as_ref().is_none_or(|m| m.buf.len() <= self.max));
                Ok((n, ev))
            }
            Err(e) => {
                self.failed = Some(e);
                self.msg = None;
                self.frame = None;
                self.scratch = Vec::new();
                Err(e)
            }
        }
    }

    fn read_inner(&mut self, input: &[u8]) -> Result<(usize, Option<WsEvent>), CloseReason> {
        let mut pos = 0;
        loop {
            if self.frame.is_none() {
                let Some(h) = parse_frame_header(&input[pos..])? else {
                    return Ok((pos, None));
                };
                self.start_frame(h.fin, h.rsv1, h.opcode, h.masked.then_some(h.mask), h.len)?;
                pos += h.header_len;
            }
            let Some(fs) = self.frame else {
                debug_assert!(false, "frame state set above");
                return Ok((pos, None));
            };
            let n = usize::try_from(fs.remaining)
                .unwrap_or(usize::MAX)
                .min(input.len() - pos);
            if n > 0 {
                self.take_payload(fs, &input[pos..pos + n])?;
                pos += n;
            }
            let Some(fs) = self.frame.as_mut() else {
                return Ok((pos, None));
            };
            fs.remaining -= n as u64;
            fs.offset = fs.offset.wrapping_add(n);
            if fs.remaining > 0 {
                debug_assert_eq!(pos, input.len());
                return Ok((pos, None));
            }
            let fs = *fs;
            self.frame = None;
            if let Some(ev) = self.finish_frame(fs)? {
                return Ok((pos, Some(ev)));
            }
        }
    }

    fn start_frame(
        &mut self,
        fin: bool,
        rsv1: bool,
        opcode: Opcode,
        mask: Option<[u8; 4]>,
        len: u64,
    ) -> Result<(), CloseReason> {
        debug_assert!(self.frame.is_none());
        if self.expect_masked && mask.is_none() {
            return Err(CloseReason::protocol("client frame not masked"));
        }
        if !self.expect_masked && mask.is_some() {
            return Err(CloseReason::protocol("server frame masked"));
        }
        if rsv1
            && (self.inflater.is_none() || opcode.is_control() || opcode == Opcode::Continuation)
        {
            return Err(CloseReason::protocol("reserved bit set"));
        }
        let max = self.max as u64;
        match opcode {
            Opcode::Close | Opcode::Ping | Opcode::Pong => {
                debug_assert!(len <= CONTROL_MAX as u64 && fin);
                self.control.clear();
            }
            Opcode::Continuation => {
                let Some(msg) = self.msg.as_mut() else {
                    return Err(CloseReason::protocol("continuation without a message"));
                };
                if !msg.compressed && msg.buf.len() as u64 + len > max {
                    return Err(CloseReason::too_big("message too big"));
                }
                msg.frames += 1;
            }
            Opcode::Text | Opcode::Binary => {
                if self.msg.is_some() {
                    return Err(CloseReason::protocol("new message inside a fragmented one"));
                }
                if !rsv1 && len > max {
                    return Err(CloseReason::too_big("message too big"));
                }
                self.msg = Some(MsgState {
                    text: opcode == Opcode::Text,
                    compressed: rsv1,
                    buf: Vec::new(),
                    utf8_ok: 0,
                    frames: 1,
                    wire_len: 0,
                });
            }
        }
        self.frame = Some(FrameState {
            opcode,
            fin,
            mask,
            remaining: len,
            offset: 0,
        });
        Ok(())
    }

    fn take_payload(&mut self, fs: FrameState, data: &[u8]) -> Result<(), CloseReason> {
        debug_assert!(data.len() as u64 <= fs.remaining);
        if fs.opcode.is_control() {
            let start = self.control.len();
            self.control.extend_from_slice(data);
            if let Some(m) = fs.mask {
                unmask(&mut self.control[start..], m, fs.offset);
            }
            debug_assert!(self.control.len() <= CONTROL_MAX);
            return Ok(());
        }
        let Some(msg) = self.msg.as_mut() else {
            return Err(CloseReason::protocol("payload without a message"));
        };
        if msg.compressed {
            msg.wire_len += data.len() as u64;
            if msg.wire_len > compressed_max(self.max) {
                return Err(CloseReason::too_big("message too big"));
            }
            let Some(inflater) = self.inflater.as_mut() else {
                return Err(CloseReason::protocol("reserved bit set"));
            };
            let mut offset = fs.offset;
            for piece in data.chunks(SCRATCH_MAX) {
                self.scratch.clear();
                self.scratch.extend_from_slice(piece);
                if let Some(m) = fs.mask {
                    unmask(&mut self.scratch, m, offset);
                }
                offset = offset.wrapping_add(piece.len());
                inflater.inflate(&self.scratch, &mut msg.buf, self.max)?;
                msg.check_utf8()?;
            }
        } else {
            let start = msg.buf.len();
            debug_assert!(start + data.len() <= self.max);
            reserve_bounded(&mut msg.buf, data.len(), self.max);
            msg.buf.extend_from_slice(data);
            if let Some(m) = fs.mask {
                unmask(&mut msg.buf[start..], m, fs.offset);
            }
            msg.check_utf8()?;
        }
        Ok(())
    }

    fn finish_frame(&mut self, fs: FrameState) -> Result<Option<WsEvent>, CloseReason> {
        let payload = || Bytes::copy_from_slice(&self.control);
        match fs.opcode {
            Opcode::Ping => Ok(Some(WsEvent::Ping(payload()))),
            Opcode::Pong => Ok(Some(WsEvent::Pong(payload()))),
            Opcode::Close => {
                let (code, reason) = parse_close_payload(&self.control)?;
                self.closed = true;
                self.msg = None;
                Ok(Some(WsEvent::Close { code, reason }))
            }
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if !fs.fin {
                    return Ok(None);
                }
                let Some(mut msg) = self.msg.take() else {
                    return Err(CloseReason::protocol("payload without a message"));
                };
                if msg.compressed {
                    let Some(inflater) = self.inflater.as_mut() else {
                        return Err(CloseReason::protocol("reserved bit set"));
                    };
                    inflater.finish_message(&mut msg.buf, self.max)?;
                    msg.check_utf8()?;
                }
                if msg.text && msg.utf8_ok != msg.buf.len() {
                    return Err(CloseReason::invalid_data("text is not UTF-8"));
                }
                debug_assert!(msg.buf.len() <= self.max);
                self.last_fragmented = msg.frames > 1;
                let data = Bytes::from(msg.buf);
                Ok(Some(if msg.text {
                    WsEvent::Text(data)
                } else {
                    WsEvent::Binary(data)
                }))
            }
        }
    }
}

macro_rules! reader_api {
    ($name:ident, $masked:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(Reader);

        impl $name {
            /// A reader accepting messages of at most `max_message_bytes` (after inflation);
            /// `deflate` when permessage-deflate was negotiated (RSV1 is a protocol error
            /// otherwise).
            pub fn new(max_message_bytes: usize, deflate: Option<Inflater>) -> Self {
                $name(Reader::new($masked, max_message_bytes, deflate))
            }

            /// Consumes from `input`; returns the bytes consumed and at most one event. Call
            /// again with the unconsumed rest until it returns `(0, None)`; keep unconsumed
            /// bytes (a partial frame header) for the next call. An error is the close code to
            /// send; the reader then keeps returning it.
            pub fn read(&mut self, input: &[u8]) -> Result<(usize, Option<WsEvent>), CloseReason> {
                self.0.read(input)
            }

            /// Whether the last data message returned came in more than one frame (GRIP control
            /// messages must be a single frame).
            pub fn last_message_fragmented(&self) -> bool {
                self.0.last_fragmented
            }

            /// Whether the peer's close frame has been read.
            pub fn is_closed(&self) -> bool {
                self.0.closed
            }

            /// Payload bytes of the message being assembled (bounded by the limit).
            pub fn buffered(&self) -> usize {
                self.0.msg.as_ref().map_or(0, |m| m.buf.len())
            }
        }
    };
}

reader_api!(
    ServerReader,
    true,
    "Reads frames sent by a client (tack as server): frames must be masked."
);
reader_api!(
    ClientReader,
    false,
    "Reads frames sent by a backend (tack as client): frames must not be masked."
);
