//! Herald's refusals as gRPC statuses, in one place.

use herald_core::codes::{ErrorCode, Refusal};
use tonic::{Code, Status};

/// The gRPC status of a refusal; the message keeps Herald's code, as `… (code 102)`.
pub fn from_refusal(refusal: Refusal) -> Status {
    let code = match refusal.code {
        ErrorCode::BadChannel
        | ErrorCode::BadRequest
        | ErrorCode::MessageTooLarge
        | ErrorCode::UnknownCommand => Code::InvalidArgument,
        ErrorCode::NotAvailable => Code::FailedPrecondition,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => Code::Unauthenticated,
        ErrorCode::LimitExceeded => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
        ErrorCode::Conflict => Code::Aborted,
        // The API never calls hooks; a backend's own refusal would be a precondition.
        ErrorCode::App(_) => Code::FailedPrecondition,
        ErrorCode::AlreadySubscribed
        | ErrorCode::NotSubscribed
        | ErrorCode::NotConnected
        | ErrorCode::AlreadyConnected => Code::FailedPrecondition,
    };
    Status::new(
        code,
        format!("{} (code {})", refusal.message, refusal.code.code()),
    )
}

pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}
