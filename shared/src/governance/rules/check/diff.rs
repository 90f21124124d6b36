//! What changes in effect from one document to another.

use std::{collections::BTreeSet, fmt};

use crate::governance::rules::Rules;

/// One difference between two documents' effective rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A setting only the new rules have.
    Added {
        /// Its path.
        path: String,
        /// Its value.
        value: String,
    },
    /// A setting only the old rules have.
    Removed {
        /// Its path.
        path: String,
        /// Its value.
        value: String,
    },
    /// A setting both have, with another value.
    Changed {
        /// Its path.
        path: String,
        /// Before.
        old: String,
        /// After.
        new: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added { path, value } => write!(f, "+ {path}: {value}"),
            Self::Removed { path, value } => write!(f, "- {path}: {value}"),
            Self::Changed { path, old, new } => write!(f, "~ {path}: {old} -> {new}"),
        }
    }
}

/// What changes in effect from `old` to `new`, setting by setting.
pub fn diff(old: &Rules, new: &Rules) -> Vec<Change> {
    let (old, new) = (old.effective(), new.effective());
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    paths
        .into_iter()
        .filter_map(|path| match (old.get(path), new.get(path)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(Change::Changed {
                path: path.clone(),
                old: a.clone(),
                new: b.clone(),
            }),
            (None, Some(b)) => Some(Change::Added {
                path: path.clone(),
                value: b.clone(),
            }),
            (Some(a), None) => Some(Change::Removed {
                path: path.clone(),
                value: a.clone(),
            }),
            (None, None) => None,
        })
        .collect()
}
