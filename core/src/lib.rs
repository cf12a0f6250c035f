//! rmq-core: the queue logic of rmq, apart from Redis's FFI.
