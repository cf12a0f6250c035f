//! rmq-client: producer with a disk spool, worker, for both rmq editions.
pub mod spool;
