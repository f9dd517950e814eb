//! Tools for testing and measuring the XDP program on synthetic packets (feature `testkit`):
//! a frame builder ([`packet`]), a namespace with known forwarding answers ([`testbed`]), the
//! helpers the fixture tests share ([`fixtures`]), the program's pipeline in plain Rust that
//! the differential test compares it with ([`reference`]), and the per-packet cost of each
//! path against the minimal programs measured in the same run ([`cost`]).

pub mod cost;
pub mod fixtures;
pub mod packet;
pub mod reference;
pub mod testbed;
