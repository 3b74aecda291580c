//! Output formats. Each takes whole events and writes them to a `Write`; none knows
//! about BPF or where the bytes go.

pub mod text;

use std::io;

use crate::event::Event;

pub trait Output {
    fn event(&mut self, ev: &Event) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}
