//! The archive page's place (search by id, key, tag, status, time range and body text; a
//! message's full history; replay of a selection), for when the SQL archive is built.
//!
//! The archive (crate `rmq-archive`, `--archive-db URL`) is not part of this build yet. To add
//! the page: give `rmq console` an `--archive-db` option, open the archive in `start_console`,
//! keep it in `App`, return its routes (`/archive`, `/archive/messages/{id}`, a POST
//! `/archive/replay` through `actions.rs` so it is confirmed and audited) from here, and show
//! a menu entry in `layout.rs` when it is configured. Its lag and gaps belong in `/metrics`
//! (`rmq_archive_lag_entries{queue}`, `rmq_archive_gaps_total{queue}`).

use axum::Router;

use super::Shared;

/// No archive routes in this build.
pub fn routes() -> Router<Shared> {
    Router::new()
}
