//! Lanes: the first `routing` lane whose match holds for a request (a
//! header value, or a stable share of users) names the instances that
//! serve it, across hops.

use std::sync::Arc;

use axum::http::HeaderMap;
use easynote_shared::governance::rules::{Lane, Rules};

use crate::auth::AuthUser;

/// The first lane, across the `routing` rules, whose match holds; a lane
/// in shadow mode whose match holds is reported to `shadowed` (by its path
/// in the document) and passed over.
pub(super) fn lane_of(
    rules: &Rules,
    headers: &HeaderMap,
    user: Option<AuthUser>,
    mut shadowed: impl FnMut(&str),
) -> Option<Arc<str>> {
    let holds = |lane: &Lane| {
        let m = &lane.matches;
        if let (Some(header), Some(equals)) = (&m.header, &m.equals) {
            return headers
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == equals);
        }
        match (m.user_percent, user) {
            (Some(percent), Some(user)) => user_bucket(user.id) < percent * 100.0,
            _ => false,
        }
    };
    for (service, routing) in &rules.routing {
        for (i, lane) in routing.lanes.iter().enumerate() {
            if !holds(lane) {
                continue;
            }
            if lane.mode.is_shadow() {
                shadowed(&format!("routing.{service}.lanes[{i}]"));
                continue;
            }
            return Some(Arc::from(lane.name.as_str()));
        }
    }
    None
}

/// A user's stable place in 0..10000, the same on every gateway.
fn user_bucket(user_id: i64) -> f64 {
    let mixed = (user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % 10_000) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_percent_lanes_are_stable_and_proportional() {
        let inside = (1..=10_000).filter(|id| user_bucket(*id) < 1000.0).count();
        assert!((800..1200).contains(&inside), "10% of users: {inside}");
        assert_eq!(user_bucket(42), user_bucket(42));
        let rules = Rules::parse(
            r#"{"routing": {"easy-note-note": {"lanes": [
                {"name": "canary", "match": {"header": "x-lane", "equals": "canary"}, "instances": {"lane": "canary"}},
                {"name": "all-users", "match": {"user_percent": 100}, "instances": {"lane": "beta"}}]}}}"#,
        )
        .expect("valid");
        let mut headers = HeaderMap::new();
        assert_eq!(lane_of(&rules, &headers, None, |_| {}), None);
        assert_eq!(
            lane_of(
                &rules,
                &headers,
                Some(AuthUser {
                    id: 7,
                    token: crate::auth::TokenId {
                        jti: 1,
                        epoch: 0,
                        expires_at: 0,
                    },
                }),
                |_| {}
            )
            .as_deref(),
            Some("all-users")
        );
        headers.insert("x-lane", "canary".parse().unwrap());
        assert_eq!(
            lane_of(&rules, &headers, None, |_| {}).as_deref(),
            Some("canary")
        );
    }

    #[test]
    fn a_shadow_lane_is_counted_and_passed_over() {
        let rules = Rules::parse(
            r#"{"routing": {"easy-note-note": {"lanes": [
                {"name": "trial", "match": {"header": "x-lane", "equals": "canary"}, "instances": {"lane": "trial"}, "mode": "shadow"},
                {"name": "canary", "match": {"header": "x-lane", "equals": "canary"}, "instances": {"lane": "canary"}}]}}}"#,
        )
        .expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert("x-lane", "canary".parse().unwrap());
        let mut counted = Vec::new();
        let lane = lane_of(&rules, &headers, None, |rule| counted.push(rule.to_owned()));
        assert_eq!(lane.as_deref(), Some("canary"));
        assert_eq!(counted, ["routing.easy-note-note.lanes[0]"]);
    }
}
