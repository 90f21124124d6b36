//! The names of gRPC status codes, once: the rules' faults take them and
//! telemetry reports them.

use tonic::Code;

/// A gRPC code from its canonical name (`UNAVAILABLE`).
pub fn code_from_name(name: &str) -> Option<Code> {
    (0..=16)
        .map(Code::from_i32)
        .find(|code| code_name(*code) == name)
}

/// The canonical name of a gRPC code: what the rules' `status` takes,
/// and what `rpc.response.status_code` and `error.type` say in telemetry.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_round_trip() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code_from_name(code_name(code)), Some(code));
        }
        assert_eq!(code_from_name("unavailable"), None);
    }
}
