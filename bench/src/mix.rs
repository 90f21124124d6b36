//! The request mix: which operations, in what proportions.

use std::{fmt, str::FromStr};

use anyhow::{Context as _, bail};

/// One kind of request of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `GET /v1/note/query?limit=10`: the first page of the user's notes.
    Query,
    /// `GET /v1/note/query?search_key=…`: a search over title and content.
    Search,
    /// `GET /v1/note/{id}` of one of the user's notes.
    Get,
    /// `POST /v1/note`.
    Create,
    /// `PUT /v1/note/{id}` of one of the user's notes.
    Update,
    /// `POST /v1/user/login` (an argon2id check).
    Login,
}

impl Op {
    pub const ALL: [Self; 6] = [
        Self::Query,
        Self::Search,
        Self::Get,
        Self::Create,
        Self::Update,
        Self::Login,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Search => "search",
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Login => "login",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Weighted operations, e.g. `query=80,create=10,update=5,login=5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

impl Default for Mix {
    fn default() -> Self {
        "query=80,create=10,update=5,login=5"
            .parse()
            .expect("the default mix parses")
    }
}

impl Mix {
    /// An operation drawn with the mix's weights from `roll` in `0..total`.
    pub fn pick(&self, roll: u32) -> Op {
        let mut roll = roll % self.total;
        for &(op, weight) in &self.weights {
            if roll < weight {
                return op;
            }
            roll -= weight;
        }
        unreachable!("roll is below the sum of the weights")
    }

    /// A random operation.
    pub fn draw(&self) -> Op {
        self.pick(fastrand::u32(0..self.total))
    }

    /// Whether some operation addresses an existing note by id.
    pub fn needs_notes(&self) -> bool {
        self.weights
            .iter()
            .any(|(op, _)| matches!(op, Op::Get | Op::Update))
    }

    /// `(operation, percent)` pairs, for reports.
    pub fn shares(&self) -> Vec<(Op, f64)> {
        self.weights
            .iter()
            .map(|&(op, w)| (op, f64::from(w) * 100.0 / f64::from(self.total)))
            .collect()
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> anyhow::Result<Self> {
        let mut weights: Vec<(Op, u32)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("{part:?} is not kind=weight"))?;
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name.trim())
                .with_context(|| {
                    format!("unknown kind {name:?} (query, search, get, create, update, login)")
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of {name} is not a whole number"))?;
            if weights.iter().any(|(seen, _)| *seen == op) {
                bail!("{name} is given twice");
            }
            if weight > 0 {
                weights.push((op, weight));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            bail!("no operation has a weight above 0");
        }
        Ok(Self { weights, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_follow_the_weights() {
        let mix: Mix = "query=2,login=1".parse().unwrap();
        let picks: Vec<Op> = (0..3).map(|roll| mix.pick(roll)).collect();
        assert_eq!(picks, [Op::Query, Op::Query, Op::Login]);
        assert_eq!(mix.pick(3), Op::Query, "rolls wrap around the total");
    }

    #[test]
    fn the_default_is_the_documented_mix() {
        let shares = Mix::default().shares();
        assert_eq!(
            shares,
            [
                (Op::Query, 80.0),
                (Op::Create, 10.0),
                (Op::Update, 5.0),
                (Op::Login, 5.0)
            ]
        );
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for (spec, reason) in [
            ("", "no operation"),
            ("query=0", "no operation"),
            ("query", "not kind=weight"),
            ("browse=1", "unknown kind"),
            ("query=x", "not a whole number"),
            ("query=1,query=2", "twice"),
        ] {
            let err = spec.parse::<Mix>().unwrap_err().to_string();
            assert!(err.contains(reason), "{spec:?}: {err}");
        }
    }
}
