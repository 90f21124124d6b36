//! How errors are written to the log: with their whole cause chain.

use std::{error::Error, fmt};

/// Displays an error followed by its causes: `outer: inner: root`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_lists_every_cause() {
        let err = Outer(std::io::Error::other("root cause"));
        assert_eq!(ErrorChain(&err).to_string(), "outer: root cause");
    }
}
