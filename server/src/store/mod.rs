//! The durable store: sources, targets, stored requests, deliveries and
//! attempts. One module per backend behind the [`Store`] type; callers speak
//! the domain types of [`model`].

pub mod model;
mod sqlite;

pub use sqlite::Store;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation; the caller
    /// may retry later. Nothing was committed.
    #[error("store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// Schema migration failed at start-up.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A referenced row does not exist (e.g. "source 7").
    #[error("{0} not found")]
    NotFound(String),
    /// A stored value could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
