//! The one way tests wait for something: poll until it holds, or fail
//! saying what was awaited and what was last seen.

use std::{fmt::Display, time::Duration};

use tokio::time::Instant;

/// Polls `check` every 25 ms until it returns `Ok`, for at most `within`,
/// and returns its value; panics naming `what` and the last error.
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match try_eventually(within, check).await {
        Ok(value) => value,
        Err(last) => panic!("{what}: not within {within:?}; last seen: {last}"),
    }
}

/// [`eventually`] that hands the last error back instead of panicking, for
/// callers that add context (the logs of the processes involved).
pub async fn try_eventually<T, E, F, Fut>(within: Duration, mut check: F) -> Result<T, String>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let calls = AtomicU32::new(0);
        let value = eventually(Duration::from_secs(5), "the third call", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                n if n >= 2 => Ok(n),
                n => Err(format!("call {n}")),
            }
        })
        .await;
        assert_eq!(value, 2);
    }

    #[tokio::test]
    async fn gives_up_with_the_last_thing_seen() {
        let err = try_eventually(Duration::from_millis(60), || async {
            Err::<(), _>("still 503")
        })
        .await
        .expect_err("never holds");
        assert_eq!(err, "still 503");
    }

    #[tokio::test]
    #[should_panic(expected = "the gateway is ready: not within")]
    async fn a_failure_names_what_was_awaited() {
        eventually(
            Duration::from_millis(30),
            "the gateway is ready",
            || async { Err::<(), _>("connection refused") },
        )
        .await;
    }
}
