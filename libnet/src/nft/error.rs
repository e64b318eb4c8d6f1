//! Errors of the nftables layer. Each names the object (set, attachment, file) that failed.

use crate::error::{HasKind, Kind};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// Bad input: unknown protocol, port out of range, address family with no container address.
    #[error("nft: invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// nft refused a transaction. `text` is nft's own error output (it names the element).
    #[error("nft {op} failed ({kind}): {text}")]
    Apply {
        op: &'static str,
        kind: Kind,
        text: String,
    },
    /// libnftables could not be loaded or a context could not be made.
    #[error("nft: libnftables: {0}")]
    Library(String),
    /// One of our tables exists but lacks what this version needs (another knit version made it).
    #[error("nft: a knit table exists but does not match this knit's skeleton: {0}")]
    Skeleton(String),
    #[error("nft state {op} {path}: {source}")]
    State {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft state {path}: bad content: {detail}")]
    StateContent { path: String, detail: String },
    /// The element is already there for another attachment (or was added by hand).
    #[error("nft {attachment}: {element} already belongs to {owner}")]
    Taken {
        attachment: String,
        element: String,
        owner: String,
    },
    /// CHECK found an element of the attachment missing.
    #[error("nft check {attachment}: missing {detail}")]
    Missing { attachment: String, detail: String },
}

impl HasKind for NftError {
    fn kind(&self) -> Kind {
        match self {
            NftError::Invalid { .. } => Kind::Invalid,
            NftError::Apply { kind, .. } => *kind,
            NftError::Library(_) => Kind::Internal,
            NftError::Skeleton(_) => Kind::Internal,
            NftError::State { source, .. } => HasKind::kind(source),
            NftError::StateContent { .. } => Kind::Internal,
            NftError::Taken { .. } => Kind::Exists,
            NftError::Missing { .. } => Kind::NotFound,
        }
    }
}

impl NftError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> NftError {
        NftError::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// Build an apply error from nft's error text, classifying the errno words nft prints.
    pub(crate) fn apply(op: &'static str, text: impl Into<String>) -> NftError {
        let text = text.into();
        NftError::Apply {
            op,
            kind: kind_of_nft_text(&text),
            text: text.trim().to_string(),
        }
    }

    /// True when the table or one of its sets does not exist (the skeleton must be made).
    pub(crate) fn is_missing(&self) -> bool {
        matches!(
            self,
            NftError::Apply {
                kind: Kind::NotFound,
                ..
            }
        )
    }
}

/// nft reports kernel errors as `strerror` text; classify them once, here.
fn kind_of_nft_text(text: &str) -> Kind {
    let has = |s: &str| text.contains(s);
    if has("No such file or directory") {
        Kind::NotFound
    } else if has("File exists") || has("Device or resource busy") {
        Kind::Exists
    } else if has("Resource temporarily unavailable")
        || has("Interrupted system call")
        || has("No buffer space available")
        || has("Cannot allocate memory")
    {
        Kind::Transient
    } else if has("Operation not permitted") || has("Permission denied") {
        Kind::Invalid
    } else {
        Kind::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_nft_text() {
        let e = NftError::apply(
            "add",
            "Error: Could not process rule: File exists\nadd element",
        );
        assert_eq!(e.kind(), Kind::Exists);
        assert!(NftError::apply("add", "Error: No such file or directory").is_missing());
        assert_eq!(
            NftError::apply("add", "syntax error, unexpected").kind(),
            Kind::Internal
        );
        assert_eq!(NftError::invalid("port", "0").kind(), Kind::Invalid);
    }
}
