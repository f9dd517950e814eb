//! Empty library target: it lets `control` name this crate as a build-dependency, so that cargo
//! rebuilds the embedded XDP object whenever this crate changes (as in the aya template).
#![no_std]
