//! The podrestore operator.

fn main() {}
