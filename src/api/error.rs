//! docker's error answers: a status and `{"message": "..."}`.

/// Why a request failed, with the status docker gives it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("page not found")]
    PageNotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0} is not supported by nook serve yet (issue 14)")]
    NotImplemented(&'static str),
    /// Something nook does not have at all (user-defined networks), docker's 501.
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) | ApiError::PageNotFound => 404,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::NotImplemented(_) | ApiError::NotSupported(_) => 501,
            ApiError::Internal(_) => 500,
        }
    }

    /// docker's error body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "message": self.to_string() })
    }

    /// A library or child failure, sorted by its message as docker's daemon sorts its errors.
    pub fn from_message(msg: &str) -> ApiError {
        let lower = msg.to_ascii_lowercase();
        if lower.contains("no such") || lower.contains("not found") {
            ApiError::NotFound(msg.to_owned())
        } else if lower.contains("in use")
            || lower.contains("is used by")
            || lower.contains("several tags")
            || lower.contains("is running")
            || lower.contains("conflict")
            || lower.contains("already")
        {
            ApiError::Conflict(msg.to_owned())
        } else if lower.contains("invalid") || lower.contains("unsupported") {
            ApiError::BadRequest(msg.to_owned())
        } else {
            ApiError::Internal(msg.to_owned())
        }
    }
}

impl From<crate::container::ContainerError> for ApiError {
    fn from(e: crate::container::ContainerError) -> ApiError {
        use crate::container::ContainerError as E;
        match e {
            E::NotFound(n) => ApiError::NotFound(format!("No such container: {n}")),
            E::Ambiguous { .. } | E::BadName(_) => ApiError::BadRequest(e.to_string()),
            E::NameInUse(_) => ApiError::Conflict(e.to_string()),
            E::Io { .. } => ApiError::Internal(chain(&e)),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        use crate::store::StoreError as E;
        match e {
            E::NoSuchImage(n) => ApiError::NotFound(format!("No such image: {n}")),
            _ => ApiError::from_message(&chain(&e)),
        }
    }
}

/// An error and its sources on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_messages_map_to_docker_statuses() {
        for (msg, status) in [
            ("no such container: x", 404),
            ("no such image: y", 404),
            (
                "image a is used by container b: remove the container first, or use -f",
                409,
            ),
            (
                "image a has several tags (x, y): name one, or use -f to remove them all",
                409,
            ),
            ("the container name \"a\" is already in use", 409),
            ("invalid signal \"FOO\"", 400),
            ("cannot mount", 500),
        ] {
            assert_eq!(ApiError::from_message(msg).status(), status, "{msg}");
        }
    }
}
