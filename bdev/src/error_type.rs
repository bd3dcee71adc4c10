//! Errors from bdev operations, each with the errno SPDK's RPCs report (`-errno`).

#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    #[error("bdev {0} already exists")]
    Exists(String),
    #[error("bdev {0} not found")]
    NotFound(String),
    #[error("bdev {0} is claimed by {1}")]
    Claimed(String, String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("out of memory: {0}")]
    NoMem(String),
    #[error("no reactor runtime is running")]
    NoRuntime,
}

impl BdevError {
    pub fn errno(&self) -> i32 {
        match self {
            BdevError::Exists(_) => libc::EEXIST,
            BdevError::NotFound(_) => libc::ENODEV,
            BdevError::Claimed(..) => libc::EBUSY,
            BdevError::Invalid(_) => libc::EINVAL,
            BdevError::Io(_, e) => e.raw_os_error().unwrap_or(libc::EIO),
            BdevError::NoMem(_) => libc::ENOMEM,
            BdevError::NoRuntime => libc::EAGAIN,
        }
    }
}
