//! Output formats. Each takes decoded events and writes them to a `Write`; none knows
//! about BPF records or where the bytes go.

pub mod hexdump;
pub mod http;
pub mod json;
pub mod pcap;
pub mod text;

use std::io;

use crate::event::Event;

pub trait Output {
    fn event(&mut self, ev: &Event) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// Several outputs fed the same events (stdout and a --pcap file).
pub struct Tee(pub Vec<Box<dyn Output>>);

impl Output for Tee {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|o| o.event(ev))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|o| o.flush())
    }
}
