//! The kind of value a config directive takes, in a leaf module so the generated tables can use it
//! without importing their parent `redis_config` back.

/// The value a directive takes, as Redis's start-up parser checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `yes` or `no`.
    Bool,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A decimal integer within these bounds.
    Integer { min: i64, max: i64 },
    /// A byte count (`64`, `1mb`, `2gb`) within these bounds.
    Bytes { min: u64, max: u64 },
    /// A byte count or a percentage of `maxmemory` (`maxmemory-clients`).
    BytesOrPercent,
    /// A free-form word (one argument).
    Text,
    /// A directive with its own syntax (several arguments, flags).
    Special,
}
